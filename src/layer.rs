//! The hot path: a `tracing_subscriber::Layer` that times command spans and hands finished
//! measurements to the background thread. Per span it keeps one small struct in the span's
//! extensions; per record it does one uncontended ring write.

use std::fmt;
use std::sync::Arc;

use tracing_core::span::{Attributes, Id, Record as SpanRecord};
use tracing_core::{Event, Interest, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::callsite::{Callsite, SpanSite};
use crate::config::Config;
use crate::entered;
use crate::error_type::leading_identifier;
use crate::export;
use crate::fields::{Collected, Collector, OutcomeField, MAX_LABELS};
use crate::names;
use crate::record::Record;
use crate::shared::{spawn_background, Shared, SpanMetricsHandle};
use crate::spans::{Closed, ErrorSource, Series, SpanState, NO_SLOT};

/// Command-span states of the layers whose table had no room, kept in the span's extensions
/// (one extension per type, so one list for every layer on the subscriber, keyed by layer).
#[derive(Default)]
struct Spilled(Vec<(u64, SpanState)>);

impl Spilled {
    fn get(&self, layer: u64) -> Option<&SpanState> {
        self.0.iter().find(|(l, _)| *l == layer).map(|(_, s)| s)
    }

    fn take(&mut self, layer: u64) -> Option<SpanState> {
        let i = self.0.iter().position(|(l, _)| *l == layer)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// A `tracing_subscriber::Layer` that turns command spans into metrics.
///
/// Build it with [`SpanMetricsLayer::builder`], or take the defaults with [`crate::layer`].
/// Keep a [`SpanMetricsHandle`] (from [`SpanMetricsLayer::handle`]) to flush on demand.
#[must_use = "a layer does nothing unless added to a subscriber"]
pub struct SpanMetricsLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SpanMetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanMetricsLayer")
            .field("selection", &self.shared.config.selection)
            .field("callsites", &self.shared.callsites)
            .finish_non_exhaustive()
    }
}

impl SpanMetricsLayer {
    /// A builder with the default configuration.
    pub fn builder() -> crate::Builder {
        crate::Builder::default()
    }

    pub(crate) fn new(config: Config) -> Self {
        let shared = Arc::new_cyclic(|weak| Shared::new(config, weak));
        spawn_background(&shared);
        Self { shared }
    }

    /// A handle for flushing; it keeps the background side alive while held.
    pub fn handle(&self) -> SpanMetricsHandle {
        SpanMetricsHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    fn span_site(&self, meta: &'static Metadata<'static>) -> Option<&SpanSite> {
        match self
            .shared
            .callsites
            .get_or_classify(meta, &self.shared.config.selection)
        {
            Callsite::Span(site) => Some(site),
            _ => None,
        }
    }

    /// The entry for the collected values, falling back to `base` (the span's current entry)
    /// for values not collected, and to the span name for the command.
    fn resolve(&self, site: &SpanSite, collected: &Collected, base: Option<Series>) -> Series {
        let registry = &self.shared.registry;
        let base = base.map(|series| registry.entry(series.entry));
        // An empty `command` value names nothing: fall back as if it were absent.
        let given = collected
            .command
            .as_ref()
            .map(|c| c.as_str())
            .filter(|c| !c.is_empty());
        let command = match (given, base) {
            (Some(c), _) => c,
            (None, Some(base)) => registry.command(base.command).name.as_ref(),
            (None, None) => site.name,
        };
        let count = self.shared.config.selection.labels.len();
        let mut labels: [Option<&str>; MAX_LABELS] = [None; MAX_LABELS];
        for (i, slot) in labels.iter_mut().enumerate().take(count) {
            *slot = match (&collected.labels[i], base) {
                (Some(v), _) => Some(v.as_str()),
                (None, Some(base)) => base.labels.get(i).and_then(|l| l.as_deref()),
                (None, None) => None,
            };
        }
        let (entry, command) = registry.resolve(site, command, &labels[..count]);
        Series { entry, command }
    }

    /// What an `outcome`, `otel.status_code` or `error.type` field on the span says.
    fn apply_outcome(&self, state: &SpanState, collected: &Collected) {
        let failed = collected.outcome.map(|o| o == OutcomeField::Error);
        let error_type = collected.error_type.as_ref().map(|text| {
            let id = self.shared.registry.intern_error_type(
                state.series().command,
                text.as_str(),
                self.shared.config.max_error_types,
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
        if let Some(state) = self.shared.spans.get(id.into_u64()) {
            return Some(f(state));
        }
        if !self.shared.spans.any_spilled() {
            return None;
        }
        let span = ctx.span(id)?;
        let extensions = span.extensions();
        extensions
            .get::<Spilled>()?
            .get(self.shared.buffers.id())
            .map(f)
    }

    /// Takes the state of command span `id` out, as it closes.
    fn take_state<S>(&self, id: &Id, ctx: &Context<'_, S>) -> Option<Closed>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(closed) = self.shared.spans.remove(id.into_u64()) {
            return Some(closed);
        }
        if !self.shared.spans.any_spilled() {
            return None;
        }
        let span = ctx.span(id)?;
        let state = span
            .extensions_mut()
            .get_mut::<Spilled>()?
            .take(self.shared.buffers.id())?;
        self.shared.spans.unspilled();
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
        self.shared
            .callsites
            .get_or_classify(meta, &self.shared.config.selection);
        Interest::always()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(site) = self.span_site(attrs.metadata()) else {
            return;
        };
        let start = self.shared.clock.raw();
        collect!(collected, &site.roles, attrs);
        let series = self.resolve(site, &collected, None);
        if let Some(state) = self.shared.spans.insert(id.into_u64(), series, start) {
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
                spilled.0.push((self.shared.buffers.id(), state));
                self.shared.spans.spilled();
            }
        }
        self.shared.buffers.add_active(series.command, 1);
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
            self.shared.buffers.add_active(from, -1);
            self.shared.buffers.add_active(to, 1);
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        if !self.shared.config.busy_time {
            return;
        }
        let id = id.into_u64();
        let slot = match self.shared.spans.find(id) {
            Some(slot) => slot,
            // With spans spilled to extensions, the exit decides, to keep the registry look-up
            // off this path.
            None if self.shared.spans.any_spilled() => NO_SLOT,
            // Not a command span: nothing to time.
            None => return,
        };
        // The time goes on this thread's stack; the exit (on this same thread) adds it up.
        entered::enter(self.shared.buffers.id(), id, slot, self.shared.clock.raw());
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if !self.shared.config.busy_time {
            return;
        }
        let Some((entered_at, slot)) = entered::exit(self.shared.buffers.id(), id.into_u64())
        else {
            return;
        };
        let busy = self
            .shared
            .clock
            .delta_as_nanos(entered_at, self.shared.clock.raw());
        match self.shared.spans.get_at(slot, id.into_u64()) {
            Some(state) => state.add_busy(busy),
            None => {
                self.with_state(id, &ctx, |state| state.add_busy(busy));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let Callsite::Event(site) = self
            .shared
            .callsites
            .get_or_classify(meta, &self.shared.config.selection)
        else {
            return;
        };
        // An event a sink emits while records are forwarded on this thread is not the
        // application's: it must not fail the command the thread happens to be in.
        if export::is_forwarding() {
            return;
        }
        if event.is_root() {
            return;
        }
        collect!(collected, &site.roles, event);
        // The time only for a mark: an error event needs no clock read.
        let now = collected.mark.is_some().then(|| self.shared.clock.raw());
        let registry = &self.shared.registry;
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
                    let id = registry.intern_error_type(
                        command,
                        text,
                        self.shared.config.max_error_types,
                    );
                    (id, ErrorSource::Event)
                });
                state.update_outcome(Some(true), error_type);
            }
            let (mark, now) = (collected.mark.as_ref()?, now?);
            Some(Record::Marked {
                command,
                mark: registry.marks.intern(mark.as_str()),
                elapsed_ns: self.shared.clock.delta_as_nanos(state.start(), now),
            })
        };
        // Usually the event's own span (its explicit parent, or the current span) is the
        // command span: found by its id alone, without walking the registry's parent chain.
        let own = if event.is_contextual() {
            ctx.current_span().id().cloned()
        } else {
            event.parent().cloned()
        };
        let found = match own.and_then(|id| self.shared.spans.get(id.into_u64())) {
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
            self.shared.record(marked);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(mut state) = self.take_state(&id, &ctx) else {
            return;
        };
        let now = self.shared.clock.raw();
        if let Some(entered_at) = entered::close(self.shared.buffers.id(), id.into_u64()) {
            // Closed while still entered here (a leaked guard, or unwinding).
            let busy = self.shared.clock.delta_as_nanos(entered_at, now);
            state.busy_ns = state.busy_ns.saturating_add(busy);
        }
        let registry = &self.shared.registry;
        let command = state.command;
        let error = if std::thread::panicking() {
            Some(registry.intern_error_type(
                command,
                names::PANIC_ERROR_TYPE,
                self.shared.config.max_error_types,
            ))
        } else if state.failed {
            Some(state.error_type.unwrap_or_else(|| {
                registry.intern_error_type(
                    command,
                    names::DEFAULT_ERROR_TYPE,
                    self.shared.config.max_error_types,
                )
            }))
        } else {
            None
        };
        let duration_ns = self.shared.clock.delta_as_nanos(state.start, now);
        if let Some(live) = &self.shared.config.live {
            live.on_close(&id, command, error, duration_ns);
        }
        self.shared.record_closing(
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
