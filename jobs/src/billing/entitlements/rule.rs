//! The provider-neutral rule: the entitlement a source's facts and paid periods call for. Stripe
//! subscriptions and Telegram Stars payments both end here, so a change of the rule is one edit.

use chrono::{DateTime, Utc};

use super::{State, Status};
use crate::billing::plans::Plans;

/// Facts is what is known of a subscription, as [`derive`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub user_id: Option<i64>,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<DateTime<Utc>>,
}

/// PaidPeriod is one paid invoice of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidPeriod {
    pub end: DateTime<Utc>,
    pub refunded: bool,
    pub disputed: bool,
}

/// Why is why an entitlement is not active, as the user is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Cancelled,
    Refunded,
    Disputed,
    Unpaid,
    Paused,
}

/// The entitlement a subscription's facts call for, with the reason to give the user when it is
/// not active; `None` while there is nothing to grant (no user, no plan, nothing paid yet).
pub fn derive(facts: &Facts, periods: &[PaidPeriod], plans: &Plans) -> Option<(State, Option<Why>)> {
    let user_id = facts.user_id?;
    let code = facts.plan.as_deref()?;
    let plan = plans.get(code)?;
    // The latest period decides; at equal ends a refunded one counts as the latest.
    let latest = periods.iter().max_by_key(|p| (p.end, p.refunded))?;
    let paid_through = periods.iter().filter(|p| !p.refunded).map(|p| p.end).max();
    let state = |status, expires_at, renews| State {
        user_id,
        plan: code.to_string(),
        entitlement: plan.entitlement.clone(),
        status,
        expires_at,
        renews,
    };
    let (status, expires_at, why) = if let Some(ended) = facts.ended_at {
        (Status::Revoked, Some(ended), Some(Why::Cancelled))
    } else if latest.refunded {
        (Status::Revoked, paid_through, Some(Why::Refunded))
    } else if periods.iter().any(|p| p.disputed && !p.refunded) {
        (Status::Suspended, paid_through, Some(Why::Disputed))
    } else {
        match facts.status.as_deref() {
            Some("canceled") => (Status::Revoked, paid_through, Some(Why::Cancelled)),
            Some("unpaid" | "incomplete_expired") => (Status::Suspended, paid_through, Some(Why::Unpaid)),
            Some("paused") => (Status::Suspended, paid_through, Some(Why::Paused)),
            _ => (Status::Active, paid_through, None),
        }
    };
    let renews = status == Status::Active && !facts.cancel_at_period_end;
    Some((state(status, expires_at, renews), why))
}

/// The state a source's newly derived `derived` state is recorded as at `now`, given what was
/// recorded `before`. An entitlement the expiry pass ended stays expired until its facts give it
/// a paid period that ends in the future: a late or repeated provider event re-derives the ended
/// period as active (or, for Stripe, an unpaid subscription as suspended), a correction of its
/// end may move it a little but still into the past, and none of these may open it again or tell
/// the user anything new. An end of another kind (a refund, a cancellation) is recorded as
/// derived, without a message.
pub fn after_expiry(before: Option<&State>, derived: State, now: DateTime<Utc>) -> State {
    let Some(expired) = before.filter(|b| b.status == Status::Expired) else {
        return derived;
    };
    let reopened = derived.status == Status::Active && derived.expires_at.is_some_and(|end| end > now);
    if reopened || derived.status == Status::Revoked {
        return derived;
    }
    State {
        status: Status::Expired,
        renews: false,
        expires_at: expired.expires_at.max(derived.expires_at),
        ..derived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"}}"#,
        )
        .unwrap()
    }

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000 + day * 86_400, 0).unwrap()
    }

    #[test]
    fn an_expired_entitlement_stays_expired_until_a_new_period_is_paid() {
        let now = at(45);
        let (active, _) = derive(&facts(), &[period(30)], &plans()).unwrap();
        let expired = State {
            status: Status::Expired,
            renews: false,
            ..active.clone()
        };
        // The same period again (a late event): still expired.
        assert_eq!(after_expiry(Some(&expired), active.clone(), now), expired);
        // Its end corrected a little, still in the past: expired, at the later end.
        let (corrected, _) = derive(&facts(), &[period(31)], &plans()).unwrap();
        let kept = after_expiry(Some(&expired), corrected, now);
        assert_eq!((kept.status, kept.expires_at), (Status::Expired, Some(at(31))));
        // Unpaid after it ended: still expired, not suspended.
        let unpaid = Facts {
            status: Some("unpaid".into()),
            ..facts()
        };
        let (suspended, _) = derive(&unpaid, &[period(30)], &plans()).unwrap();
        assert_eq!(after_expiry(Some(&expired), suspended, now), expired);
        // A renewal paid: active until its end.
        let (renewed, _) = derive(&facts(), &[period(30), period(60)], &plans()).unwrap();
        assert_eq!(after_expiry(Some(&expired), renewed.clone(), now), renewed);
        // A refund of the period: revoked, as derived.
        let (refunded, _) = derive(
            &facts(),
            &[PaidPeriod {
                refunded: true,
                ..period(30)
            }],
            &plans(),
        )
        .unwrap();
        assert_eq!(after_expiry(Some(&expired), refunded.clone(), now), refunded);
        // Nothing expired before: as derived.
        assert_eq!(after_expiry(Some(&active), active.clone(), now), active);
        assert_eq!(after_expiry(None, active.clone(), now), active);
    }

    fn facts() -> Facts {
        Facts {
            user_id: Some(7),
            plan: Some("pro".into()),
            ..Facts::default()
        }
    }

    fn period(day: i64) -> PaidPeriod {
        PaidPeriod {
            end: at(day),
            refunded: false,
            disputed: false,
        }
    }

    #[test]
    fn nothing_is_granted_before_a_user_a_plan_and_a_payment_are_known() {
        let plans = plans();
        assert_eq!(derive(&facts(), &[], &plans), None);
        let no_user = Facts {
            user_id: None,
            ..facts()
        };
        assert_eq!(derive(&no_user, &[period(30)], &plans), None);
        let unknown_plan = Facts {
            plan: Some("gold".into()),
            ..facts()
        };
        assert_eq!(derive(&unknown_plan, &[period(30)], &plans), None);
    }

    #[test]
    fn paid_periods_extend_access_to_the_latest_end() {
        let (state, why) = derive(&facts(), &[period(30), period(60)], &plans()).unwrap();
        assert_eq!(
            (state.status, state.expires_at, state.renews, why),
            (Status::Active, Some(at(60)), true, None)
        );
        let cancelling = Facts {
            cancel_at_period_end: true,
            status: Some("active".into()),
            ..facts()
        };
        let (state, _) = derive(&cancelling, &[period(30)], &plans()).unwrap();
        assert_eq!((state.status, state.renews), (Status::Active, false));
    }

    #[test]
    fn refunding_the_latest_period_revokes_and_a_later_payment_restores() {
        let refunded = PaidPeriod {
            refunded: true,
            ..period(60)
        };
        let (state, why) = derive(&facts(), &[period(30), refunded], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Revoked, Some(at(30))));
        assert_eq!(why, Some(Why::Refunded));
        let (state, _) = derive(&facts(), &[period(30), refunded, period(90)], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Active, Some(at(90))));
    }

    #[test]
    fn disputes_suspend_and_endings_revoke() {
        let disputed = PaidPeriod {
            disputed: true,
            ..period(30)
        };
        let (state, _) = derive(&facts(), &[disputed], &plans()).unwrap();
        assert_eq!((state.status, state.renews), (Status::Suspended, false));
        let ended = Facts {
            ended_at: Some(at(10)),
            ..facts()
        };
        let (state, _) = derive(&ended, &[period(30)], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Revoked, Some(at(10))));
        let unpaid = Facts {
            status: Some("unpaid".into()),
            ..facts()
        };
        assert_eq!(
            derive(&unpaid, &[period(30)], &plans()).unwrap().0.status,
            Status::Suspended
        );
        let past_due = Facts {
            status: Some("past_due".into()),
            ..facts()
        };
        assert_eq!(
            derive(&past_due, &[period(30)], &plans()).unwrap().0.status,
            Status::Active
        );
    }
}
