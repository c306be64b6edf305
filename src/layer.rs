//! The hot path: a `tracing_subscriber::Layer` that times command spans and hands finished
//! measurements to the background thread. Per span it keeps one small struct in the span's
//! extensions; per record it does one uncontended ring write.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tracing_core::span::{Attributes, Id, Record as SpanRecord};
use tracing_core::{Event, Interest, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::buffer::{Buffers, PushError, Record};
use crate::callsite::{Callsite, CallsiteTable, SpanSite};
use crate::config::{Config, MeterSink};
use crate::error_type::leading_identifier;
use crate::export::otel::{Callbacks, Instruments};
use crate::export::recorder::RecorderHandles;
use crate::export::{self, Pump};
use crate::fields::{Collected, Collector, OutcomeField, MAX_LABELS};
use crate::names;
use crate::registry::Registry;

/// How long a thread whose ring is full waits for another thread's forwarding to free space.
const FULL_RING_PATIENCE_NS: u64 = 2_000_000;

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
    entered_at: u64,
    busy_ns: u64,
    depth: u32,
    failed: bool,
    error_type: Option<u16>,
    error_source: ErrorSource,
}

/// State shared by the layer, its handles and its background thread.
pub(crate) struct Shared {
    pub(crate) config: Config,
    callsites: CallsiteTable,
    pub(crate) registry: Registry,
    pub(crate) buffers: Buffers,
    pump: Mutex<Pump>,
    clock: &'static quanta::Clock,
}

impl Shared {
    fn new(config: Config, weak: &Weak<Shared>) -> Self {
        let recorder = RecorderHandles::new(config.recorder.clone());
        let meter = match &config.meter {
            MeterSink::Global => Some(opentelemetry::global::meter_with_scope(crate::scope())),
            MeterSink::Meter(meter) => Some(meter.clone()),
            MeterSink::Off => None,
        };
        let instruments = meter.map(|meter| {
            let (active, dropped) = (weak.clone(), weak.clone());
            Instruments::new(
                &meter,
                &config.buckets,
                Callbacks {
                    // Collection forwards what is buffered first, so an export is never stale.
                    active: Box::new(move |observe| {
                        if let Some(shared) = active.upgrade() {
                            let mut pump = shared.lock_pump();
                            pump.drain(&shared.context());
                            pump.observe_active(observe);
                        }
                    }),
                    dropped: Box::new(move || {
                        dropped
                            .upgrade()
                            .map_or(0, |shared| shared.buffers.dropped())
                    }),
                },
            )
        });
        Self {
            registry: Registry::new(config.max_series, config.max_marks),
            buffers: Buffers::new(config.buffer_capacity),
            callsites: CallsiteTable::new(),
            pump: Mutex::new(Pump::new(recorder, instruments)),
            clock: crate::clock::clock(),
            config,
        }
    }

    fn lock_pump(&self) -> std::sync::MutexGuard<'_, Pump> {
        self.pump.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn context(&self) -> export::Context<'_> {
        export::Context {
            config: &self.config,
            registry: &self.registry,
            buffers: &self.buffers,
        }
    }

    pub(crate) fn flush(&self) {
        self.lock_pump().drain(&self.context());
    }

    /// Hands a record to the background side.
    fn record(&self, record: Record) {
        if let Err(PushError::Full) = self.buffers.try_push(record) {
            self.record_when_full(record);
        } else {
            // Pushed, or the thread is exiting (nothing can be done for it then).
        }
    }

    /// This thread's ring is full: the background thread is starved of CPU. Rather than lose
    /// the record, this thread forwards the buffered records itself, or, if another thread is
    /// at it, gives it a moment (at most [`FULL_RING_PATIENCE_NS`]) to free space: overload
    /// slows the threads that cause it instead of losing data. The sinks' own logs cannot feed
    /// back into the layer: inside a subscriber callback, tracing-core routes nested events to
    /// no subscriber. Past the patience, the record is dropped and counted.
    #[cold]
    #[inline(never)]
    fn record_when_full(&self, record: Record) {
        let deadline = self.clock.raw();
        loop {
            let pump = match self.pump.try_lock() {
                Ok(pump) => Some(pump),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut pump) = pump {
                pump.drain(&self.context());
            }
            match self.buffers.try_push(record) {
                Ok(()) => return,
                Err(PushError::Unavailable) => break,
                Err(PushError::Full) => {
                    if self.clock.delta_as_nanos(deadline, self.clock.raw()) > FULL_RING_PATIENCE_NS
                    {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
        self.buffers.count_dropped();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Forward what is still buffered, then let the background thread see it is alone.
        self.flush();
        if let Some(thread) = self.buffers.waker() {
            thread.unpark();
        }
    }
}

fn spawn_background(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("spanmetrics".into())
        .spawn(move || {
            // Nothing this thread does may be traced by the layer that it serves.
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                while let Some(shared) = weak.upgrade() {
                    shared.flush();
                    let interval = shared.config.flush_interval;
                    drop(shared);
                    std::thread::park_timeout(interval);
                }
            })
        });
    match spawned {
        Ok(handle) => shared.buffers.set_waker(handle.thread().clone()),
        // Records are still forwarded on `flush()` and on every OpenTelemetry collection.
        Err(error) => eprintln!("spanmetrics: cannot start the background thread: {error}"),
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

/// A cheap, cloneable handle to a layer's background side.
#[derive(Clone)]
pub struct SpanMetricsHandle {
    shared: Arc<Shared>,
}

impl SpanMetricsHandle {
    /// Forwards every measurement buffered so far to the sinks, at once.
    ///
    /// The background thread does this every flush interval, and an OpenTelemetry collection
    /// does it first; call it before reading a `metrics` recorder directly (in tests, or
    /// before rendering a Prometheus page yourself).
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Number of measurements dropped so far because a thread's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.buffers.dropped()
    }
}

impl fmt::Debug for SpanMetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanMetricsHandle").finish_non_exhaustive()
    }
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

    /// Busy-time bookkeeping on enter and exit: `update` gets the command span's state and the
    /// time. Other spans cost one callsite look-up and no lock.
    fn update_timing<S>(
        &self,
        id: &Id,
        ctx: &Context<'_, S>,
        update: impl FnOnce(&mut SpanState, u64),
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if !self.shared.config.busy_time {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        if !matches!(
            self.shared.callsites.get(span.metadata()),
            Some(Callsite::Span(_))
        ) {
            return;
        }
        let now = self.shared.clock.raw();
        let mut extensions = span.extensions_mut();
        if let Some(state) = extensions.get_mut::<SpanState>() {
            update(state, now);
        }
    }

    fn apply_outcome(&self, state: &mut SpanState, collected: &Collected) {
        match collected.outcome {
            Some(OutcomeField::Error) => state.failed = true,
            Some(OutcomeField::Ok) => state.failed = false,
            None => {}
        }
        if let Some(error_type) = &collected.error_type {
            state.error_type = Some(self.shared.registry.error_types.intern(error_type.as_str()));
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
            entered_at: 0,
            busy_ns: 0,
            depth: 0,
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
        let mut extensions = span.extensions_mut();
        let Some(state) = extensions.get_mut::<SpanState>() else {
            return;
        };
        if collected.command.is_some() || collected.any_label() {
            let entry = self.resolve(site, &collected, Some(state.entry));
            let command = self.shared.registry.entry(entry).command;
            if command != state.command {
                self.shared.record(Record::Moved {
                    from: state.command,
                    to: command,
                });
                state.command = command;
            }
            state.entry = entry;
        }
        self.apply_outcome(state, &collected);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.update_timing(id, &ctx, |state, now| {
            if state.depth == 0 {
                state.entered_at = now;
            }
            state.depth = state.depth.saturating_add(1);
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let clock = self.shared.clock;
        self.update_timing(id, &ctx, |state, now| {
            state.depth = state.depth.saturating_sub(1);
            if state.depth == 0 {
                let busy = clock.delta_as_nanos(state.entered_at, now);
                state.busy_ns = state.busy_ns.saturating_add(busy);
            }
        });
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
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        collect!(collected, &site.roles, event);
        let now = self.shared.clock.raw();
        let registry = &self.shared.registry;
        // The nearest enclosing command span is the one the event belongs to.
        for span in scope {
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
                    state.error_type = Some(registry.error_types.intern(error_type));
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
        if state.depth > 0 {
            // Closed while still entered (a guard leaked, or unwinding).
            let busy = self.shared.clock.delta_as_nanos(state.entered_at, now);
            state.busy_ns = state.busy_ns.saturating_add(busy);
        }
        let registry = &self.shared.registry;
        let error = if std::thread::panicking() {
            Some(registry.error_types.intern(names::PANIC_ERROR_TYPE))
        } else if state.failed {
            Some(
                state
                    .error_type
                    .unwrap_or_else(|| registry.error_types.intern(names::DEFAULT_ERROR_TYPE)),
            )
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
            busy_ns: state.busy_ns,
        });
    }
}
