//! The pump's series: handles per (entry, error type), per (command, mark) and per command's
//! in-flight gauge, made on first use, with the series cap applied here (records past it fold
//! into one overflow series each, counted).

use crate::capture::catalog::{Catalog, OVERFLOW_COMMAND, OVERFLOW_ENTRY};
use crate::config::Config;
use crate::names;
use crate::sink::{Attribute, Metric, Sink};

/// Every series handle of one layer, indexed by id: no hashing per record.
pub(super) struct SeriesTable<S: Sink> {
    /// Per entry id: its duration/busy series.
    series: Vec<EntrySeries<S>>,
    /// Series with handles of their own, against the cap.
    series_count: usize,
    /// Where records past the series cap go.
    overflow_series: Option<SeriesHandles<S>>,
    /// Per command id: (mark id, handle).
    marks: Vec<Vec<(u16, S::Histogram)>>,
    marks_count: usize,
    overflow_marks: Option<S::Histogram>,
    /// Per command id: its in-flight count and gauge.
    commands: Vec<Option<CommandState<S>>>,
    /// Commands with a state of their own (not counting the overflow command).
    commands_count: usize,
    /// Counters of folded records, per metric, made on first use.
    folded_durations: Option<S::Counter>,
    folded_marks: Option<S::Counter>,
}

/// What resolving a series needs to read.
pub(super) struct Resolve<'a, S> {
    pub(super) sink: &'a S,
    pub(super) config: &'a Config,
    pub(super) catalog: &'a Catalog,
}

/// The duration/busy series of one entry: success, and each error type seen.
pub(super) struct EntrySeries<S: Sink> {
    ok: Option<SeriesHandles<S>>,
    errors: Vec<(u16, SeriesHandles<S>)>,
}

impl<S: Sink> Default for EntrySeries<S> {
    fn default() -> Self {
        Self {
            ok: None,
            errors: Vec::new(),
        }
    }
}

impl<S: Sink> EntrySeries<S> {
    fn get(&self, error: Option<u16>) -> Option<&SeriesHandles<S>> {
        match error {
            None => self.ok.as_ref(),
            Some(id) => self.errors.iter().find(|(e, _)| *e == id).map(|(_, s)| s),
        }
    }

    fn get_or_insert_with(
        &mut self,
        error: Option<u16>,
        make: impl FnOnce() -> SeriesHandles<S>,
    ) -> &SeriesHandles<S> {
        match error {
            None => self.ok.get_or_insert_with(make),
            Some(id) => {
                let position = match self.errors.iter().position(|(e, _)| *e == id) {
                    Some(position) => position,
                    None => {
                        self.errors.push((id, make()));
                        self.errors.len() - 1
                    }
                };
                &self.errors[position].1
            }
        }
    }
}

/// Handles of one duration/busy series.
pub(super) struct SeriesHandles<S: Sink> {
    pub(super) duration: S::Histogram,
    pub(super) busy: Option<S::Histogram>,
}

/// Per-command state: in-flight count and its gauge.
pub(super) struct CommandState<S: Sink> {
    pub(super) active: i64,
    pub(super) published: i64,
    pub(super) gauge: S::Gauge,
}

/// The attribute of the one series that collects records beyond the cap.
const OVERFLOW: [Attribute<'static>; 1] = [(names::ATTR_OVERFLOW, "true")];

/// Which records an overflow counter counts.
#[derive(Clone, Copy)]
enum Folded {
    Durations,
    Marks,
}

impl<S: Sink> SeriesTable<S> {
    pub(super) fn new() -> Self {
        Self {
            series: Vec::new(),
            series_count: 0,
            overflow_series: None,
            marks: Vec::new(),
            marks_count: 0,
            overflow_marks: None,
            commands: Vec::new(),
            commands_count: 0,
            folded_durations: None,
            folded_marks: None,
        }
    }

    /// Whether any command has run.
    pub(super) fn any_command(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Each command's id and in-flight count.
    pub(super) fn active(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.commands
            .iter()
            .enumerate()
            .filter_map(|(id, state)| Some((id as u32, state.as_ref()?.active)))
    }

    /// The state of command `id`: its own while fewer than the series cap have one, else the
    /// overflow command's (the in-flight gauge is capped like every other metric).
    pub(super) fn command(&mut self, cx: &Resolve<'_, S>, id: u32) -> &mut CommandState<S> {
        let own = self.commands.get(id as usize).is_some_and(Option::is_some);
        let id = if own || id == OVERFLOW_COMMAND || self.commands_count < cx.config.max_series {
            id
        } else {
            OVERFLOW_COMMAND
        };
        let index = id as usize;
        if self.commands.len() <= index {
            self.commands.resize_with(index + 1, || None);
        }
        if !own && id != OVERFLOW_COMMAND && self.commands[index].is_none() {
            self.commands_count += 1;
        }
        let sink = cx.sink;
        self.commands[index].get_or_insert_with(|| {
            let gauge = if id == OVERFLOW_COMMAND {
                sink.in_flight(&OVERFLOW)
            } else {
                let name = &cx.catalog.command(id).name;
                sink.in_flight(&[(names::ATTR_COMMAND, name)])
            };
            CommandState {
                active: 0,
                published: 0,
                gauge,
            }
        })
    }

    pub(super) fn series(
        &mut self,
        cx: &Resolve<'_, S>,
        entry: u32,
        error: Option<u16>,
    ) -> &SeriesHandles<S> {
        let index = entry as usize;
        let known = self
            .series
            .get(index)
            .is_some_and(|s| s.get(error).is_some());
        if !known && (entry == OVERFLOW_ENTRY || self.series_count >= cx.config.max_series) {
            S::add(self.folded(cx.sink, Folded::Durations), 1);
            let sink = cx.sink;
            return self
                .overflow_series
                .get_or_insert_with(|| make_series(sink, cx, &OVERFLOW));
        }
        if self.series.len() <= index {
            self.series.resize_with(index + 1, EntrySeries::default);
        }
        let (sink, count) = (cx.sink, &mut self.series_count);
        self.series[index].get_or_insert_with(error, || {
            *count += 1;
            let entry = cx.catalog.entry(entry);
            let command = &cx.catalog.command(entry.command).name;
            let outcome = if error.is_some() { "error" } else { "ok" };
            let mut attributes: Vec<Attribute<'_>> = vec![
                (names::ATTR_COMMAND, command),
                (names::ATTR_OUTCOME, outcome),
            ];
            if let Some(id) = error {
                attributes.push((names::ATTR_ERROR_TYPE, cx.catalog.error_types.get(id)));
            }
            for (name, value) in cx.config.selection.labels.iter().zip(entry.labels.iter()) {
                if let Some(value) = value {
                    attributes.push((name, value));
                }
            }
            make_series(sink, cx, &attributes)
        })
    }

    pub(super) fn mark(&mut self, cx: &Resolve<'_, S>, command: u32, mark: u16) -> &S::Histogram {
        let index = command as usize;
        let position = self
            .marks
            .get(index)
            .and_then(|marks| marks.iter().position(|(m, _)| *m == mark));
        if position.is_none()
            && (command == OVERFLOW_COMMAND || self.marks_count >= cx.config.max_series)
        {
            S::add(self.folded(cx.sink, Folded::Marks), 1);
            let sink = cx.sink;
            return self
                .overflow_marks
                .get_or_insert_with(|| sink.histogram(Metric::Mark, &OVERFLOW));
        }
        if self.marks.len() <= index {
            self.marks.resize_with(index + 1, Vec::new);
        }
        let position = match position {
            Some(position) => position,
            None => {
                let attributes = [
                    (names::ATTR_COMMAND, &*cx.catalog.command(command).name),
                    (names::ATTR_MARK, cx.catalog.marks.get(mark)),
                ];
                let handle = cx.sink.histogram(Metric::Mark, &attributes);
                self.marks_count += 1;
                self.marks[index].push((mark, handle));
                self.marks[index].len() - 1
            }
        };
        &self.marks[index][position].1
    }

    fn folded(&mut self, sink: &S, which: Folded) -> &S::Counter {
        let (slot, metric) = match which {
            Folded::Marks => (&mut self.folded_marks, Metric::Mark),
            Folded::Durations => (&mut self.folded_durations, Metric::Duration),
        };
        slot.get_or_insert_with(|| sink.folded(metric))
    }

    /// Sets each command's in-flight count from the sums over every thread (`totals`, per
    /// command id).
    pub(super) fn set_active(&mut self, cx: &Resolve<'_, S>, totals: Vec<i64>) {
        for state in self.commands.iter_mut().flatten() {
            state.active = 0;
        }
        for (id, total) in totals.into_iter().enumerate() {
            let known = self.commands.get(id).is_some_and(Option::is_some);
            if known || total != 0 {
                // Added, not set: commands past the cap share the overflow command's state. Each
                // is clamped first, as an own gauge would be: a close counted before its start
                // must not hide another command's span in flight.
                let total = if id == OVERFLOW_COMMAND as usize {
                    total
                } else {
                    total.max(0)
                };
                self.command(cx, id as u32).active += total;
            }
        }
    }

    /// Pushes changed in-flight counts to the gauges.
    pub(super) fn publish(&mut self) {
        for state in self.commands.iter_mut().flatten() {
            if state.active != state.published {
                // A span closed on another thread can be drained before its start: never
                // show a negative count for that moment.
                S::set(&state.gauge, state.active.max(0));
                state.published = state.active;
            }
        }
    }
}

fn make_series<S: Sink>(
    sink: &S,
    cx: &Resolve<'_, S>,
    attributes: &[Attribute<'_>],
) -> SeriesHandles<S> {
    SeriesHandles {
        duration: sink.histogram(Metric::Duration, attributes),
        busy: cx
            .config
            .busy_time
            .then(|| sink.histogram(Metric::Busy, attributes)),
    }
}
