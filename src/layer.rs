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

use crate::buffer::Record;
use crate::callsite::{Callsite, SpanSite};
use crate::config::Config;
use crate::entered;
use crate::error_type::leading_identifier;
use crate::export;
use crate::fields::{Collected, Collector, OutcomeField, MAX_LABELS};
use crate::names;
use crate::shared::{spawn_background, Shared, SpanMetricsHandle};

/// Where the error type of a failed span came from; a higher source is not overwritten by a
/// lower one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorSource {
    None,
    Event,
    SpanField,
}

/// Per-span timing and outcome, kept in the span's extensions.
struct SpanState {
    entry: u32,
    command: u32,
    start: u64,
    busy_ns: u64,
    failed: bool,
    error_type: Option<u16>,
    error_source: ErrorSource,
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
    fn resolve(&self, site: &SpanSite, collected: &Collected, base: Option<u32>) -> u32 {
        let registry = &self.shared.registry;
        let base = base.map(|id| registry.entry(id));
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
        registry.resolve(site, command, &labels[..count])
    }

    fn apply_outcome(&self, state: &mut SpanState, collected: &Collected) {
        match collected.outcome {
            Some(OutcomeField::Error) => state.failed = true,
            Some(OutcomeField::Ok) => state.failed = false,
            None => {}
        }
        if let Some(error_type) = &collected.error_type {
            state.error_type = Some(self.shared.registry.intern_error_type(
                state.command,
                error_type.as_str(),
                self.shared.config.max_error_types,
            ));
            state.error_source = ErrorSource::SpanField;
        }
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
        let entry = self.resolve(site, &collected, None);
        let command = self.shared.registry.entry(entry).command;
        let mut state = SpanState {
            entry,
            command,
            start,
            busy_ns: 0,
            failed: false,
            error_type: None,
            error_source: ErrorSource::None,
        };
        self.apply_outcome(&mut state, &collected);
        let Some(span) = ctx.span(id) else {
            return;
        };
        span.extensions_mut().insert(state);
        self.shared.record(Record::Started { command });
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let Some(site) = self.span_site(span.metadata()) else {
            return;
        };
        collect!(collected, &site.roles, values);
        let moved = {
            let mut extensions = span.extensions_mut();
            let Some(state) = extensions.get_mut::<SpanState>() else {
                return;
            };
            let mut moved = None;
            if collected.command.is_some() || collected.any_label() {
                let entry = self.resolve(site, &collected, Some(state.entry));
                let command = self.shared.registry.entry(entry).command;
                if command != state.command {
                    moved = Some(Record::Moved {
                        from: state.command,
                        to: command,
                    });
                    state.command = command;
                }
                state.entry = entry;
            }
            self.apply_outcome(state, &collected);
            moved
        };
        // Not while holding the span's extensions: handing over may wait when overloaded.
        if let Some(moved) = moved {
            self.shared.record(moved);
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        // No look-up of the span: the time goes on this thread's stack, and the exit (on this
        // same thread) decides whether it was a command span.
        if self.shared.config.busy_time {
            entered::enter(
                self.shared.buffers.id(),
                id.into_u64(),
                self.shared.clock.raw(),
            );
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if !self.shared.config.busy_time {
            return;
        }
        let Some(entered_at) = entered::exit(self.shared.buffers.id(), id.into_u64()) else {
            return;
        };
        let Some(span) = ctx.span(id) else {
            return;
        };
        if !matches!(
            self.shared.callsites.get(span.metadata()),
            Some(Callsite::Span(_))
        ) {
            return;
        }
        let busy = self
            .shared
            .clock
            .delta_as_nanos(entered_at, self.shared.clock.raw());
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            state.busy_ns = state.busy_ns.saturating_add(busy);
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
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        collect!(collected, &site.roles, event);
        let now = self.shared.clock.raw();
        let registry = &self.shared.registry;
        // The nearest enclosing command span is the one the event belongs to.
        for span in scope {
            // A shared lock to look, the exclusive one only on the command span itself.
            if span.extensions().get::<SpanState>().is_none() {
                continue;
            }
            let mut extensions = span.extensions_mut();
            let Some(state) = extensions.get_mut::<SpanState>() else {
                continue;
            };
            if site.is_error {
                state.failed = true;
                if state.error_source < ErrorSource::SpanField {
                    let error_type = match (&collected.error_type, &collected.error_text) {
                        (Some(t), _) => t.as_str(),
                        (None, Some(text)) => {
                            leading_identifier(text.as_str()).unwrap_or(names::DEFAULT_ERROR_TYPE)
                        }
                        (None, None) => names::DEFAULT_ERROR_TYPE,
                    };
                    state.error_type = Some(registry.intern_error_type(
                        state.command,
                        error_type,
                        self.shared.config.max_error_types,
                    ));
                    state.error_source = ErrorSource::Event;
                }
            }
            if let Some(mark) = &collected.mark {
                self.shared.record(Record::Marked {
                    command: state.command,
                    mark: registry.marks.intern(mark.as_str()),
                    elapsed_ns: self.shared.clock.delta_as_nanos(state.start, now),
                });
            }
            return;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(mut state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        let now = self.shared.clock.raw();
        if let Some(entered_at) = entered::close(self.shared.buffers.id(), id.into_u64()) {
            // Closed while still entered here (a leaked guard, or unwinding).
            let busy = self.shared.clock.delta_as_nanos(entered_at, now);
            state.busy_ns = state.busy_ns.saturating_add(busy);
        }
        let registry = &self.shared.registry;
        let error = if std::thread::panicking() {
            Some(registry.intern_error_type(
                state.command,
                names::PANIC_ERROR_TYPE,
                self.shared.config.max_error_types,
            ))
        } else if state.failed {
            Some(state.error_type.unwrap_or_else(|| {
                registry.intern_error_type(
                    state.command,
                    names::DEFAULT_ERROR_TYPE,
                    self.shared.config.max_error_types,
                )
            }))
        } else {
            None
        };
        let duration_ns = self.shared.clock.delta_as_nanos(state.start, now);
        if let Some(live) = &self.shared.config.live {
            live.on_close(&id, state.command, error, duration_ns);
        }
        self.shared.record(Record::Finished {
            entry: state.entry,
            error,
            duration_ns,
            // Entered on several threads at once, the sum could pass the wall time; busy versus
            // idle is a split of the duration, so it is capped there.
            busy_ns: state.busy_ns.min(duration_ns),
        });
    }
}
