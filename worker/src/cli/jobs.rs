//! `worker jobs …`: what ops can do about queues (statistics, pause, resume) and jobs in any
//! state (list, show, retry, discard). The same operations back the `/v1/ops/jobs` endpoints.

use std::time::Duration;

use clap::{Args, Subcommand};
use jobs::queue::Queue;
use jobs::queue::ops::{self, Change, DeadFilter};
use sqlx::PgPool;

use super::{Format, TO_THE_SECOND, print_as, when};

/// JobsArgs is `worker jobs [--format table|json] <command>`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// How listings print: aligned columns, or JSON (the same objects as `/v1/ops`).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// JobsCommand is one of the `worker jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Per queue: pending, running, scheduled and dead jobs, the oldest pending job's age, jobs
    /// completed in the last minute and hour, throughput over 5 minutes, and whether it is paused.
    Stats,
    /// Pauses a queue: no worker process takes its jobs from its next fetch (within a second)
    /// until `resume`. Running jobs finish; new jobs are still enqueued.
    Pause { queue: Queue },
    /// Resumes a paused queue.
    Resume { queue: Queue },
    /// Lists jobs in any state, newest first: by queue, state, logical key or payload field.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<Queue>,
        /// Only this state: pending, running, completed, dead or discarded.
        #[arg(long, value_parser = parse_state)]
        state: Option<&'static str>,
        /// Only the job of this logical key, e.g. billing_request:12.
        #[arg(long)]
        key: Option<String>,
        /// Only jobs whose payload contains this JSON object, e.g. '{"user_id":42}'.
        #[arg(long, value_parser = parse_payload)]
        payload: Option<serde_json::Value>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Lists dead jobs, most recently dead first.
    Dead {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Shows one job: state, payload and every recorded error.
    Show { id: i64 },
    /// Puts a dead job (or with --all, every dead job matching the filter) back in its queue.
    /// `checkout` and `refunds` jobs created more than 23 hours ago need --past-key-memory:
    /// Stripe forgets idempotency keys after 24 hours, so their retry could repeat a Stripe call.
    Retry {
        #[command(flatten)]
        target: Target,
        /// Retry `checkout` and `refunds` jobs older than Stripe's key memory too, after checking
        /// at Stripe that their calls were not made.
        #[arg(long)]
        past_key_memory: bool,
    },
    /// Discards a dead or waiting job (or with --all, every dead job matching the filter).
    Discard(Target),
}

/// Target is one job by id, or every dead job matching a filter.
#[derive(Debug, Args)]
pub struct Target {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<i64>,
    /// Every dead job matching the filter.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// With --all: only count the jobs it would change.
    #[arg(long, requires = "all")]
    dry_run: bool,
}

/// FilterArgs selects dead jobs.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<Queue>,
    /// Only jobs dead for at least this long, e.g. 30m, 2h, 7d; at most 100years.
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only jobs dead for at most this long; at most 100years.
    #[arg(long, value_parser = parse_age)]
    newer_than: Option<Duration>,
}

/// An age of a dead-job filter, as humantime writes it, up to [`ops::MAX_AGE`]. Clap names the
/// flag in its error; more than the bound would otherwise reach PostgreSQL as a timestamp out
/// of range.
fn parse_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age > ops::MAX_AGE {
        return Err(format!("at most {}", humantime::format_duration(ops::MAX_AGE)));
    }
    Ok(age)
}

/// A job state, one of [`ops::STATES`].
fn parse_state(text: &str) -> Result<&'static str, String> {
    ops::STATES
        .into_iter()
        .find(|s| *s == text)
        .ok_or_else(|| format!("one of {}", ops::STATES.join(", ")))
}

/// A payload filter: a JSON object.
fn parse_payload(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(object @ serde_json::Value::Object(_)) => Ok(object),
        _ => Err("a JSON object, e.g. '{\"user_id\":42}'".into()),
    }
}

impl From<&FilterArgs> for DeadFilter {
    fn from(f: &FilterArgs) -> DeadFilter {
        DeadFilter {
            queue: f.queue,
            older_than: f.older_than,
            newer_than: f.newer_than,
            died_at_most: None,
        }
    }
}

/// Runs `command`, printing its result to stdout in `format`.
pub async fn run(pool: &PgPool, JobsArgs { format, command }: JobsArgs) -> anyhow::Result<()> {
    match command {
        JobsCommand::Stats => print_as(format, &ops::queue_stats(pool).await?, |stats| {
            println!(
                "{:<14} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>6}",
                "queue",
                "pending",
                "running",
                "scheduled",
                "dead",
                "oldest(s)",
                "done(1m)",
                "done(1h)",
                "per s",
                "paused"
            );
            for s in stats {
                println!(
                    "{:<14} {:>9} {:>9} {:>9} {:>9} {:>10.1} {:>9} {:>9} {:>8.2} {:>6}",
                    s.queue,
                    s.pending,
                    s.running,
                    s.scheduled,
                    s.dead,
                    s.oldest_pending_age_seconds,
                    s.completed_last_minute,
                    s.completed_last_hour,
                    s.completed_per_second,
                    if s.paused { "yes" } else { "no" }
                );
            }
        })?,
        JobsCommand::List {
            queue,
            state,
            key,
            payload,
            limit,
        } => {
            let filter = ops::JobFilter {
                queue,
                state,
                logical_key: key,
                payload,
            };
            print_as(format, &ops::list(pool, &filter, limit, None).await?, |jobs| {
                println!(
                    "{:>10}  {:<14} {:<10} {:<32} {:>8}  {:<25} last error",
                    "id", "queue", "state", "logical key", "attempts", "created at"
                );
                for j in jobs {
                    println!(
                        "{:>10}  {:<14} {:<10} {:<32} {:>8}  {:<25} {}",
                        j.id,
                        j.queue,
                        j.state,
                        j.logical_key,
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.created_at.format(TO_THE_SECOND),
                        j.last_error.as_deref().unwrap_or("-")
                    );
                }
                println!("{} job(s)", jobs.len());
            })?
        }
        JobsCommand::Pause { queue } => match ops::pause(pool, queue).await? {
            true => println!("queue {queue} paused: workers take none of its jobs until `worker jobs resume {queue}`"),
            false => println!("queue {queue} was paused already"),
        },
        JobsCommand::Resume { queue } => match ops::resume(pool, queue).await? {
            true => println!("queue {queue} resumed"),
            false => println!("queue {queue} was not paused"),
        },
        JobsCommand::Dead { filter, limit } => {
            let dead = ops::list_dead(pool, &DeadFilter::from(&filter), limit, None).await?;
            print_as(format, &dead, |dead| {
                println!(
                    "{:>10}  {:<14} {:<25} {:>8}  {:<36}",
                    "id", "queue", "died at", "attempts", "last error"
                );
                for j in dead {
                    println!(
                        "{:>10}  {:<14} {:<25} {:>8}  {}",
                        j.id,
                        j.queue,
                        j.died_at.format(TO_THE_SECOND),
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.last_error.as_deref().unwrap_or("-")
                    );
                }
                println!("{} dead job(s)", dead.len());
            })?
        }
        JobsCommand::Show { id } => match ops::show(pool, id).await? {
            Some(job) => print_as(format, &job, describe)?,
            None => anyhow::bail!("no job {id}"),
        },
        JobsCommand::Retry {
            target,
            past_key_memory,
        } => match target.id {
            Some(id) => report(id, "retried", "dead", ops::retry(pool, id, past_key_memory).await?)?,
            None => {
                let filter = DeadFilter::from(&target.filter);
                let bulk =
                    ops::retry_matching(pool, &filter, past_key_memory, target.dry_run, progress("retried")).await?;
                let done = if target.dry_run { "would be retried" } else { "retried" };
                println!("{} job(s) {done}", bulk.count);
                if bulk.skipped_past_key_memory > 0 {
                    println!(
                        "{} checkout or refunds job(s) created more than 23 h ago (Stripe keeps idempotency keys 24 h) left dead: \
                         check at Stripe that their calls were not made, then add --past-key-memory",
                        bulk.skipped_past_key_memory
                    );
                }
            }
        },
        JobsCommand::Discard(target) => match target.id {
            Some(id) => report(id, "discarded", "dead or pending", ops::discard(pool, id).await?)?,
            None => {
                let filter = DeadFilter::from(&target.filter);
                let count = ops::discard_matching(pool, &filter, target.dry_run, progress("discarded")).await?;
                let done = if target.dry_run {
                    "would be discarded"
                } else {
                    "discarded"
                };
                println!("{count} job(s) {done}");
            }
        },
    }
    Ok(())
}

/// One job for people, as `show` prints it: its fields, payload, and each recorded error.
fn describe(job: &ops::JobDetail) {
    println!("job          {}", job.id);
    println!("queue        {}", job.queue);
    println!("logical key  {}", job.logical_key);
    println!("state        {}", job.state);
    println!("attempts     {}/{}", job.attempt, job.max_attempts);
    println!("created at   {}", job.created_at.format(TO_THE_SECOND));
    println!("run at       {}", job.run_at.format(TO_THE_SECOND));
    println!("finished at  {}", when(job.finished_at, TO_THE_SECOND));
    println!("locked by    {}", job.locked_by.as_deref().unwrap_or("-"));
    println!("payload      {}", job.payload);
    let errors = job.errors.as_array().map(Vec::as_slice).unwrap_or_default();
    println!("errors       {}", errors.len());
    for e in errors {
        let text = |field: &str| {
            e[field]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| e[field].to_string())
        };
        println!(
            "  attempt {} at {} ({}): {}",
            e["attempt"],
            text("at"),
            text("kind"),
            text("error")
        );
    }
}

/// A bulk change's progress, on stderr once it spans more than one batch of
/// [`ops::BULK_BATCH`] (what stdout says at the end stays the answer).
fn progress(done: &'static str) -> impl FnMut(u64) + Send {
    move |so_far| {
        if so_far > ops::BULK_BATCH as u64 {
            eprintln!("{so_far} job(s) {done} so far…");
        }
    }
}

/// Says what became of job `id`; `applies_to` names the states the change applies to.
fn report(id: i64, done: &str, applies_to: &str, change: Change) -> anyhow::Result<()> {
    match change {
        Change::Done => {
            println!("job {id} {done}");
            Ok(())
        }
        Change::NotFound => anyhow::bail!("no job {id}"),
        Change::WrongState(state) => anyhow::bail!("job {id} is {state}; only {applies_to} jobs can be {done}"),
        Change::PastKeyMemory { queue, age } => {
            anyhow::bail!("{}", ops::past_key_memory(id, &queue, age, "--past-key-memory"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_taken_up_to_100_years_as_humantime_counts_them() {
        assert_eq!(parse_age("100years"), Ok(ops::MAX_AGE));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("100years 1s"), Err("at most 100years".into()));
        assert_eq!(parse_age("100000years"), Err("at most 100years".into()));
        assert!(parse_age("soon").is_err());
    }
}
