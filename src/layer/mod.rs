//! The layer: the `tracing_subscriber::Layer` callbacks that run on the caller's thread. Each
//! reads the callsite's cached decision, keeps a command span's state in the span table (the
//! span's extensions when the table is full), and at close hands one record to this thread's
//! ring. The parts it is built from are in [`crate::capture`] and [`crate::handoff`]; the
//! background side in [`crate::pump`].

mod background;
pub(crate) mod engine;
mod handle;

pub use self::handle::SpanMetricsHandle;

use std::fmt;
use std::sync::Arc;

use tracing_core::span::{Attributes, Id, Record as SpanRecord};
use tracing_core::{Event, Interest, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use self::engine::{Engine, Targets};
use crate::capture::callsite::{Callsite, SpanSite};
use crate::capture::entered;
use crate::capture::error_type::leading_identifier;
use crate::capture::fields::{Collected, Collector, OutcomeField};
use crate::capture::spans::{Closed, ErrorSource, SeriesId, SpanState, Spilled, NO_SLOT};
use crate::config::{Config, MAX_LABELS};
use crate::handoff::forwarding::is_forwarding;
use crate::handoff::record::Record;
use crate::names;

/// A `tracing_subscriber::Layer` that turns command spans into metrics.
///
/// Build it with [`SpanMetricsLayer::builder`], or take the defaults with [`crate::layer`].
/// Keep a [`SpanMetricsHandle`] (from [`SpanMetricsLayer::handle`]) to flush on demand.
#[must_use = "a layer does nothing unless added to a subscriber"]
pub struct SpanMetricsLayer {
    engine: Arc<Engine>,
}

impl fmt::Debug for SpanMetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanMetricsLayer")
            .field("selection", &self.engine.config.selection)
            .field("callsites", &self.engine.callsites)
            .finish_non_exhaustive()
    }
}

impl SpanMetricsLayer {
    pub(crate) fn new(config: Config, targets: Targets) -> Self {
        let engine = Arc::new_cyclic(|weak| Engine::new(config, targets, weak));
        background::spawn(&engine);
        Self { engine }
    }

    /// A handle for flushing; it keeps the background side alive while held.
    pub fn handle(&self) -> SpanMetricsHandle {
        SpanMetricsHandle {
            engine: Arc::clone(&self.engine),
        }
    }

    fn span_site(&self, meta: &'static Metadata<'static>) -> Option<&SpanSite> {
        match self
            .engine
            .callsites
            .get_or_classify(meta, &self.engine.config.selection)
        {
            Callsite::Span(site) => Some(site),
            _ => None,
        }
    }

    /// The entry for the collected values, falling back to `base` (the span's current entry)
    /// for values not collected, and to the span name for the command.
    fn resolve(&self, site: &SpanSite, collected: &Collected, base: Option<SeriesId>) -> SeriesId {
        let catalog = &self.engine.catalog;
        let base = base.map(|series| catalog.entry(series.entry));
        // An empty `command` value names nothing: fall back as if it were absent.
        let given = collected
            .command
            .as_ref()
            .map(|c| c.as_str())
            .filter(|c| !c.is_empty());
        let command = match (given, base) {
            (Some(c), _) => c,
            (None, Some(base)) => catalog.command(base.command).name.as_ref(),
            (None, None) => site.name,
        };
        let count = self.engine.config.selection.labels.len();
        let mut labels: [Option<&str>; MAX_LABELS] = [None; MAX_LABELS];
        for (i, slot) in labels.iter_mut().enumerate().take(count) {
            *slot = match (&collected.labels[i], base) {
                (Some(v), _) => Some(v.as_str()),
                (None, Some(base)) => base.labels.get(i).and_then(|l| l.as_deref()),
                (None, None) => None,
            };
        }
        let (entry, command) = catalog.resolve(site, command, &labels[..count]);
        SeriesId { entry, command }
    }

    /// What an `outcome`, `otel.status_code` or `error.type` field on the span says.
    fn apply_outcome(&self, state: &SpanState, collected: &Collected) {
        let failed = collected.outcome.map(|o| o == OutcomeField::Error);
        let error_type = collected.error_type.as_ref().map(|text| {
            let id = self.engine.catalog.intern_error_type(
                state.series().command,
                text.as_str(),
                self.engine.config.max_error_types,
            );
            (id, ErrorSource::SpanField)
        });
        if failed.is_some() || error_type.is_some() {
            state.update_outcome(failed, error_type);
        }
    }

    /// Runs `f` on the state of command span `id`, wherever it is kept; `None` for a span that
    /// is no command span (or was created before this layer saw it).
    fn with_state<S, R>(
        &self,
        id: &Id,
        ctx: &Context<'_, S>,
        f: impl FnOnce(&SpanState) -> R,
    ) -> Option<R>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(state) = self.engine.spans.get(id.into_u64()) {
            return Some(f(state));
        }
        if !self.engine.spans.any_spilled() {
            return None;
        }
        let span = ctx.span(id)?;
        let extensions = span.extensions();
        extensions
            .get::<Spilled>()?
            .get(self.engine.buffers.id())
            .map(f)
    }

    /// Takes the state of command span `id` out, as it closes.
    fn take_state<S>(&self, id: &Id, ctx: &Context<'_, S>) -> Option<Closed>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(closed) = self.engine.spans.remove(id.into_u64()) {
            return Some(closed);
        }
        if !self.engine.spans.any_spilled() {
            return None;
        }
        let span = ctx.span(id)?;
        let state = span
            .extensions_mut()
            .get_mut::<Spilled>()?
            .take(self.engine.buffers.id())?;
        self.engine.spans.unspilled();
        Some(state.into_closed())
    }
}

/// Binds `$name` to the fields of interest of `$source`. A macro rather than a function
/// returning `Collected`, so the (1 KiB, stack-only) struct is built in place, not copied out.
macro_rules! collect {
    ($name:ident, $roles:expr, $source:expr) => {
        let mut $name = Collected::new();
        $source.record(&mut Collector {
            roles: $roles,
            out: &mut $name,
        });
    };
}

impl<S> Layer<S> for SpanMetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        self.engine
            .callsites
            .get_or_classify(meta, &self.engine.config.selection);
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(site) = self.span_site(attrs.metadata()) else {
            return;
        };
        let start = self.engine.clock.raw();
        collect!(collected, &site.roles, attrs);
        let series = self.resolve(site, &collected, None);
        if let Some(state) = self.engine.spans.insert(id.into_u64(), series, start) {
            self.apply_outcome(state, &collected);
        } else {
            // More command spans in flight than the table holds: the slow path.
            let state = SpanState::new(series, start);
            self.apply_outcome(&state, &collected);
            let Some(span) = ctx.span(id) else {
                return;
            };
            let mut extensions = span.extensions_mut();
            if extensions.get_mut::<Spilled>().is_none() {
                extensions.insert(Spilled::default());
            }
            if let Some(spilled) = extensions.get_mut::<Spilled>() {
                spilled.0.push((self.engine.buffers.id(), state));
                self.engine.spans.spilled();
            }
        }
        self.engine.buffers.add_active(series.command, 1);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let Some(site) = self.span_site(span.metadata()) else {
            return;
        };
        collect!(collected, &site.roles, values);
        let moved = self.with_state(id, &ctx, |state| {
            let mut moved = None;
            if collected.command.is_some() || collected.any_label() {
                let series = self.resolve(site, &collected, Some(state.series()));
                let (from, to) = (state.set_series(series).command, series.command);
                if from != to {
                    moved = Some((from, to));
                }
            }
            self.apply_outcome(state, &collected);
            moved
        });
        if let Some(Some((from, to))) = moved {
            self.engine.buffers.add_active(from, -1);
            self.engine.buffers.add_active(to, 1);
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        if !self.engine.config.busy_time {
            return;
        }
        let id = id.into_u64();
        let slot = match self.engine.spans.find(id) {
            Some(slot) => slot,
            // With spans spilled to extensions, the exit decides, to keep the registry look-up
            // off this path.
            None if self.engine.spans.any_spilled() => NO_SLOT,
            // Not a command span: nothing to time.
            None => return,
        };
        // The time goes on this thread's stack; the exit (on this same thread) adds it up.
        entered::enter(self.engine.buffers.id(), id, slot, self.engine.clock.raw());
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if !self.engine.config.busy_time {
            return;
        }
        let Some((entered_at, slot)) = entered::exit(self.engine.buffers.id(), id.into_u64())
        else {
            return;
        };
        let busy = self
            .engine
            .clock
            .delta_as_nanos(entered_at, self.engine.clock.raw());
        match self.engine.spans.get_at(slot, id.into_u64()) {
            Some(state) => state.add_busy(busy),
            None => {
                self.with_state(id, &ctx, |state| state.add_busy(busy));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let Callsite::Event(site) = self
            .engine
            .callsites
            .get_or_classify(meta, &self.engine.config.selection)
        else {
            return;
        };
        // An event a sink emits while records are forwarded on this thread is not the
        // application's: it must not fail the command the thread happens to be in.
        if is_forwarding() {
            return;
        }
        if event.is_root() {
            return;
        }
        collect!(collected, &site.roles, event);
        // The time only for a mark: an error event needs no clock read.
        let now = collected.mark.is_some().then(|| self.engine.clock.raw());
        let catalog = &self.engine.catalog;
        let apply = |state: &SpanState| {
            let command = state.series().command;
            if site.is_error {
                let error_type = state.takes_error_type_from(ErrorSource::Event).then(|| {
                    let text = match (&collected.error_type, &collected.error_text) {
                        (Some(t), _) => t.as_str(),
                        (None, Some(text)) => {
                            leading_identifier(text.as_str()).unwrap_or(names::DEFAULT_ERROR_TYPE)
                        }
                        (None, None) => names::DEFAULT_ERROR_TYPE,
                    };
                    let id = catalog.intern_error_type(
                        command,
                        text,
                        self.engine.config.max_error_types,
                    );
                    (id, ErrorSource::Event)
                });
                state.update_outcome(Some(true), error_type);
            }
            let (mark, now) = (collected.mark.as_ref()?, now?);
            Some(Record::Marked {
                command,
                mark: catalog.marks.intern(mark.as_str()),
                elapsed_ns: self.engine.clock.delta_as_nanos(state.start(), now),
            })
        };
        // Usually the event's own span (its explicit parent, or the current span) is the
        // command span: found by its id alone, without walking the registry's parent chain.
        let own = if event.is_contextual() {
            ctx.current_span().id().cloned()
        } else {
            event.parent().cloned()
        };
        let found = match own.and_then(|id| self.engine.spans.get(id.into_u64())) {
            Some(state) => Some(apply(state)),
            None => ctx.event_scope(event).and_then(|scope| {
                // The nearest enclosing command span is the one the event belongs to.
                scope
                    .into_iter()
                    .find_map(|span| self.with_state(&span.id(), &ctx, apply))
            }),
        };
        // Handed over outside the state: handing over may wait when overloaded.
        if let Some(Some(marked)) = found {
            self.engine.record(marked);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(mut state) = self.take_state(&id, &ctx) else {
            return;
        };
        let now = self.engine.clock.raw();
        if let Some(entered_at) = entered::close(self.engine.buffers.id(), id.into_u64()) {
            // Closed while still entered here (a leaked guard, or unwinding).
            let busy = self.engine.clock.delta_as_nanos(entered_at, now);
            state.busy_ns = state.busy_ns.saturating_add(busy);
        }
        let catalog = &self.engine.catalog;
        let command = state.command;
        let error = if std::thread::panicking() {
            Some(catalog.intern_error_type(
                command,
                names::PANIC_ERROR_TYPE,
                self.engine.config.max_error_types,
            ))
        } else if state.failed {
            Some(state.error_type.unwrap_or_else(|| {
                catalog.intern_error_type(
                    command,
                    names::DEFAULT_ERROR_TYPE,
                    self.engine.config.max_error_types,
                )
            }))
        } else {
            None
        };
        let duration_ns = self.engine.clock.delta_as_nanos(state.start, now);
        if let Some(notables) = &self.engine.notables {
            notables.on_close(&id, command, error, duration_ns);
        }
        self.engine.record_closing(
            command,
            Record::Finished {
                entry: state.entry,
                error,
                duration_ns,
                // Entered on several threads at once, the sum could pass the wall time; busy versus
                // idle is a split of the duration, so it is capped there.
                busy_ns: state.busy_ns.min(duration_ns),
            },
        );
    }
}
