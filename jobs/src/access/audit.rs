//! The audit of paid chats: who is in a chat without access, and who has access but is not in
//! it, from the membership `chat_member` updates keep and the active entitlements. `fix` queues
//! the access job of each, which checks again and removes the first (sparing administrators)
//! and sends the second a link.

use chrono::Utc;
use serde::Serialize;
use sqlx::PgConnection;

use super::SyncAccess;
use crate::billing::{EntitlementsJob, Plans};
use crate::queue::{NewJob, enqueue};

/// Finding is one user out of place in one paid chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct Finding {
    pub chat_id: i64,
    pub user_id: i64,
}

/// Audit is what an audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct Audit {
    /// In the chat (member or restricted, not an administrator) with no active entitlement that
    /// opens it.
    pub members_without_access: Vec<Finding>,
    /// With an active entitlement that opens the chat, and not in it (never joined, left, or
    /// not seen by the bot).
    pub entitled_not_in_chat: Vec<Finding>,
}

/// Compares every paid chat's members with who should be in it.
pub async fn audit(conn: &mut PgConnection, plans: &Plans) -> Result<Audit, sqlx::Error> {
    let (codes, chats): (Vec<String>, Vec<i64>) = plans
        .iter()
        .flat_map(|(code, plan)| plan.chats.iter().map(move |chat| (code.to_string(), *chat)))
        .unzip();
    let members_without_access = sqlx::query_as(
        "WITH opens AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o(plan, chat_id))
         SELECT m.chat_id, m.user_id FROM chat_members m
         WHERE m.status IN ('member', 'restricted') AND m.chat_id = ANY($2)
           AND NOT EXISTS (SELECT 1 FROM entitlements e JOIN opens o ON o.plan = e.plan
                           WHERE e.user_id = m.user_id AND e.status = 'active' AND o.chat_id = m.chat_id)
         ORDER BY m.chat_id, m.user_id",
    )
    .bind(&codes)
    .bind(&chats)
    .fetch_all(&mut *conn)
    .await?;
    let entitled_not_in_chat = sqlx::query_as(
        "WITH opens AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o(plan, chat_id))
         SELECT DISTINCT o.chat_id, e.user_id FROM entitlements e JOIN opens o ON o.plan = e.plan
         WHERE e.status = 'active'
           AND NOT EXISTS (SELECT 1 FROM chat_members m
                           WHERE m.chat_id = o.chat_id AND m.user_id = e.user_id
                             AND m.status = ANY($3))
         ORDER BY o.chat_id, e.user_id",
    )
    .bind(&codes)
    .bind(&chats)
    .bind(&super::IN_CHAT[..])
    .fetch_all(conn)
    .await?;
    Ok(Audit {
        members_without_access,
        entitled_not_in_chat,
    })
}

/// Queues the access job of each of `findings` (which removes a member without access and sends
/// an entitled user a link, after checking again); returns how many. Run it in a transaction.
pub async fn fix(conn: &mut PgConnection, findings: &[Finding]) -> Result<usize, sqlx::Error> {
    let at = Utc::now().timestamp_micros();
    for finding in findings {
        let job = EntitlementsJob::SyncAccess(SyncAccess::check(finding.user_id, finding.chat_id));
        let key = format!("audit:{}:{}:{at}", finding.chat_id, finding.user_id);
        enqueue(&mut *conn, &NewJob::new(&job, key)).await?;
    }
    Ok(findings.len())
}
