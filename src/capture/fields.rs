//! Reading span and event fields without allocating: values are formatted into fixed-size
//! stack buffers, and each field's role comes from the callsite's pre-computed table.

use std::fmt;

use tracing_core::field::{Field, Visit};

use super::callsite::FieldRole;
use super::error_type::debug_head;
use super::text::{StackStr, ERROR_TYPE_CAP, VALUE_CAP};
use crate::config::MAX_LABELS;

/// What an `outcome` or `otel.status_code` field said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutcomeField {
    Ok,
    Error,
}

impl OutcomeField {
    fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("error") {
            Some(Self::Error)
        } else if value.eq_ignore_ascii_case("ok") {
            Some(Self::Ok)
        } else {
            None
        }
    }
}

/// Field values of interest collected from one `Attributes`, `Record` or `Event`.
pub(crate) struct Collected {
    pub(crate) command: Option<StackStr<VALUE_CAP>>,
    pub(crate) labels: [Option<StackStr<VALUE_CAP>>; MAX_LABELS],
    pub(crate) outcome: Option<OutcomeField>,
    pub(crate) error_type: Option<StackStr<ERROR_TYPE_CAP>>,
    /// Leading part of the `error` field's text, for deriving an error type.
    pub(crate) error_text: Option<StackStr<ERROR_TYPE_CAP>>,
    pub(crate) mark: Option<StackStr<VALUE_CAP>>,
}

impl Collected {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            command: None,
            labels: [None; MAX_LABELS],
            outcome: None,
            error_type: None,
            error_text: None,
            mark: None,
        }
    }

    pub(crate) fn any_label(&self) -> bool {
        self.labels.iter().any(Option::is_some)
    }
}

/// Visits fields, dispatching on the role the callsite assigned to each field index.
pub(crate) struct Collector<'a> {
    pub(crate) roles: &'a [FieldRole],
    pub(crate) out: &'a mut Collected,
}

impl Collector<'_> {
    fn role(&self, field: &Field) -> FieldRole {
        self.roles
            .get(field.index())
            .copied()
            .unwrap_or(FieldRole::Ignore)
    }

    fn store(&mut self, role: FieldRole, text: &str) {
        match role {
            FieldRole::Ignore => {}
            FieldRole::Command => self.out.command = Some(StackStr::from_str(text)),
            FieldRole::Label(i) => {
                if let Some(slot) = self.out.labels.get_mut(usize::from(i)) {
                    *slot = Some(StackStr::from_str(text));
                }
            }
            FieldRole::Outcome | FieldRole::StatusCode => {
                if let Some(outcome) = OutcomeField::parse(text) {
                    self.out.outcome = Some(outcome);
                }
            }
            FieldRole::ErrorType => self.out.error_type = Some(StackStr::from_str(text)),
            FieldRole::Error => self.out.error_text = Some(StackStr::from_str(text)),
            FieldRole::Mark => self.out.mark = Some(StackStr::from_str(text)),
        }
    }
}

impl Visit for Collector<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let role = self.role(field);
        self.store(role, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let role = self.role(field);
        if role == FieldRole::Ignore {
            return;
        }
        if role == FieldRole::Error {
            let head = debug_head(value);
            // A string (`error = ?message`) is quoted by `Debug`: its text is what counts.
            if !head.as_str().starts_with('"') {
                self.out.error_text = Some(head);
                return;
            }
        }
        // Room for the two quotes `Debug` adds around a string, so that a long `?value` keeps
        // as many bytes as a long `value` does once `store` cuts it to `VALUE_CAP`.
        let text = StackStr::<{ VALUE_CAP + 2 }>::from_debug(value);
        self.store(role, text.unquoted());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let role = self.role(field);
        if role == FieldRole::Ignore {
            return;
        }
        // `Display` of an error has no type name in it; its `Debug` usually does.
        if role == FieldRole::Error {
            self.out.error_text = Some(debug_head(&value));
            return;
        }
        let text = StackStr::<VALUE_CAP>::from_debug(&value);
        self.store(role, text.as_str());
    }
}
