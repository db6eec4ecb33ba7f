//! A campaign's schedule: every N hours or a five-field cron expression (with standard cron's
//! weekdays, handed to the cron crate as day names), its latest and next slots, and which slot of
//! a campaign is due to fire.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The schedule a campaign gets when none is given: every four hours.
pub const DEFAULT_EVERY_HOURS: u32 = 4;

/// Schedule is when a campaign's broadcasts are due (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Every `hours` hours, counted from the campaign's creation.
    Every { hours: u32 },
    /// A five-field cron expression: minute, hour, day of month, month, day of week.
    Cron { expression: String },
}

impl Schedule {
    /// Checks the schedule; a cron expression must have five fields and parse.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Schedule::Every { hours } if (1..=8760).contains(hours) => Ok(()),
            Schedule::Every { .. } => Err("every_hours must be 1 to 8760".into()),
            Schedule::Cron { expression } => self::cron(expression).map(|_| ()),
        }
    }

    /// The latest slot at or before `now` and after `created_at`, if any: the one a worker fires.
    /// Slots missed before it are not returned, so a worker that was down catches up with one.
    pub fn latest_slot(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let slot = match self {
            Schedule::Every { hours } => {
                let period = TimeDelta::hours(i64::from(*hours));
                let periods = (now - created_at).num_seconds().div_euclid(period.num_seconds());
                (periods >= 1).then(|| created_at + period * periods as i32)?
            }
            Schedule::Cron { expression } => cron(expression)
                .ok()?
                .after(&(now + TimeDelta::seconds(1)))
                .next_back()?,
        };
        (slot > created_at && slot <= now).then_some(slot)
    }

    /// The first slot after `now`.
    pub fn next_slot(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { hours } => {
                let period = TimeDelta::hours(i64::from(*hours));
                let periods = (now - created_at).num_seconds().div_euclid(period.num_seconds()).max(0);
                Some(created_at + period * (periods as i32 + 1))
            }
            Schedule::Cron { expression } => cron(expression).ok()?.after(&now).next(),
        }
    }
}

/// The cron crate's schedule for a standard five-field expression. The crate wants seconds first
/// and numbers weekdays 1 (Sunday) to 7, where standard cron has 0 (or 7) for Sunday to 6: the
/// weekday field is handed over as day names.
fn cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields[..] else {
        return Err(format!(
            "cron {expression:?} has {} fields; give five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    };
    if day != "*" && day != "?" && weekday != "*" && weekday != "?" {
        // Classic cron fires when either matches; the cron crate when both do. Refused rather
        // than read either way.
        return Err(format!(
            "cron {expression:?} restricts both the day of the month and the weekday; restrict one"
        ));
    }
    let weekday = weekday_names(weekday).map_err(|e| format!("cron {expression:?}: {e}"))?;
    cron::Schedule::from_str(&format!("0 {minute} {hour} {day} {month} {weekday}"))
        .map_err(|e| format!("cron {expression:?}: {e}"))
}

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A standard cron weekday field (`*`, numbers 0-7 with 0 and 7 for Sunday, names, ranges,
/// lists, steps) as the list of day names it selects.
fn weekday_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    // A day as written: 0-7, or a name; Sunday ends a range as 7, so that `SAT-SUN` runs forward.
    let day = |s: &str, ends_range: bool| -> Result<usize, String> {
        match s.parse::<usize>() {
            Ok(n @ 0..=7) => Ok(n),
            Ok(_) => Err(format!("weekday {s} is not 0 to 7")),
            Err(_) => match WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(s)) {
                Some(0) if ends_range => Ok(7),
                Some(n) => Ok(n),
                None => Err(format!("weekday {s:?} is not a number 0 to 7 or SUN to SAT")),
            },
        }
    };
    let mut selected = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().map_err(|_| format!("step {step:?}"))?),
            None => (item, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (day(a, false)?, day(b, true)?),
            None if step > 1 => (day(range, false)?, 6),
            None => (day(range, false)?, day(range, false)?),
        };
        if first > last {
            return Err(format!("weekday range {range:?} runs backwards"));
        }
        for d in (first..=last).step_by(step) {
            selected[d % 7] = true;
        }
    }
    Ok(WEEKDAYS
        .iter()
        .zip(selected)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// The schedule of a campaign's row: its cron expression, or else its period.
pub(super) fn schedule_of(every_hours: Option<i32>, cron: Option<String>) -> Schedule {
    match cron {
        Some(expression) => Schedule::Cron { expression },
        None => Schedule::Every {
            hours: every_hours.unwrap_or(DEFAULT_EVERY_HOURS as i32) as u32,
        },
    }
}

/// DueCampaign is what the scheduler reads of a campaign.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DueCampaign {
    pub name: String,
    every_hours: Option<i32>,
    cron: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_slot: Option<DateTime<Utc>>,
    pub skip_until: Option<DateTime<Utc>>,
    pub paused: bool,
}

impl DueCampaign {
    /// The slot to fire now, if one is due that has not fired.
    pub fn due_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let schedule = schedule_of(self.every_hours, self.cron.clone());
        let slot = schedule.latest_slot(self.created_at, now)?;
        let fired = self.last_slot.is_some_and(|last| slot <= last);
        let skipped = self.skip_until.is_some_and(|until| slot <= until);
        (!self.paused && !fired && !skipped).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_n_hours_fires_the_latest_slot_only() {
        let schedule = Schedule::Every { hours: 4 };
        let created = at("2026-12-01T10:00:00Z");
        assert_eq!(schedule.latest_slot(created, at("2026-12-01T13:59:59Z")), None);
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-01T14:00:00Z")),
            Some(at("2026-12-01T14:00:00Z"))
        );
        // Down for a day: one slot, the latest, not six.
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-02T13:00:00Z")),
            Some(at("2026-12-02T10:00:00Z"))
        );
        assert_eq!(
            schedule.next_slot(created, at("2026-12-02T13:00:00Z")),
            Some(at("2026-12-02T14:00:00Z"))
        );
    }

    #[test]
    fn cron_schedules_fire_their_latest_slot_after_creation() {
        let schedule = Schedule::Cron {
            expression: "30 9 * * *".into(),
        };
        assert_eq!(schedule.validate(), Ok(()));
        let created = at("2026-12-01T10:00:00Z");
        assert_eq!(schedule.latest_slot(created, at("2026-12-02T09:29:00Z")), None);
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-02T09:30:00Z")),
            Some(at("2026-12-02T09:30:00Z"))
        );
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-05T09:30:00Z"))
        );
        assert_eq!(
            schedule.next_slot(created, at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-06T09:30:00Z"))
        );
        for bad in [
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "nonsense x y z w",
            "0 9 * * 8",
            "0 9 * * 5-1",
            "0 9 * * FUNDAY",
        ] {
            assert!(Schedule::Cron { expression: bad.into() }.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_weekdays_count_as_standard_cron_does() {
        let latest = |expression: &str, now: &str| {
            Schedule::Cron {
                expression: expression.into(),
            }
            .latest_slot(at("2026-11-01T00:00:00Z"), at(now))
        };
        // 2026-12-06 is a Sunday, 2026-12-07 a Monday, 2026-12-11 a Friday, 2026-12-12 a Saturday.
        assert_eq!(
            latest("0 9 * * 1-5", "2026-12-07T10:00:00Z"),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * 1-5", "2026-12-06T10:00:00Z"),
            Some(at("2026-12-04T09:00:00Z"))
        );
        for sunday in ["0", "7", "SUN", "sun"] {
            let expression = format!("0 9 * * {sunday}");
            assert_eq!(
                latest(&expression, "2026-12-07T10:00:00Z"),
                Some(at("2026-12-06T09:00:00Z")),
                "{expression}"
            );
        }
        assert_eq!(
            latest("0 9 * * 5-7", "2026-12-06T08:00:00Z"),
            Some(at("2026-12-05T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * MON,FRI", "2026-12-10T10:00:00Z"),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * */2", "2026-12-08T10:00:00Z"),
            Some(at("2026-12-08T09:00:00Z"))
        );
        assert_eq!(weekday_names("*/2"), Ok("SUN,TUE,THU,SAT".into()));
        assert_eq!(weekday_names("1/2"), Ok("MON,WED,FRI".into()));
        assert_eq!(weekday_names("7-7"), Ok("SUN".into()));
        assert_eq!(weekday_names("SAT-SUN"), Ok("SUN,SAT".into()));
        assert_eq!(weekday_names("MON-SUN"), Ok("SUN,MON,TUE,WED,THU,FRI,SAT".into()));
        assert_eq!(weekday_names("5-07"), Ok("SUN,FRI,SAT".into()));
        for bad in ["7-3", "SUN-SAT-MON", "", "1,", "x/2", "1/0", "8"] {
            assert!(weekday_names(bad).is_err(), "{bad}");
        }
        assert!(
            Schedule::Cron {
                expression: "0 9 1 * MON".into()
            }
            .validate()
            .is_err(),
            "day of month and weekday both restricted"
        );
    }

    #[test]
    fn a_fired_or_skipped_slot_does_not_fire_again() {
        let mut due = DueCampaign {
            name: "c".into(),
            every_hours: Some(1),
            cron: None,
            created_at: at("2026-12-01T10:00:00Z"),
            last_slot: None,
            skip_until: None,
            paused: false,
        };
        let now = at("2026-12-01T12:30:00Z");
        assert_eq!(due.due_slot(now), Some(at("2026-12-01T12:00:00Z")));
        due.last_slot = Some(at("2026-12-01T12:00:00Z"));
        assert_eq!(due.due_slot(now), None);
        due.last_slot = Some(at("2026-12-01T11:00:00Z"));
        due.skip_until = Some(at("2026-12-01T12:10:00Z"));
        assert_eq!(due.due_slot(now), None);
        assert_eq!(
            due.due_slot(at("2026-12-01T13:00:00Z")),
            Some(at("2026-12-01T13:00:00Z"))
        );
    }
}
