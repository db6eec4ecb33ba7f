use jobs::metrics::counters::Counter as BusinessCounter;
use jobs::metrics::{DURATION_BUCKETS, Total};

use super::event_type_label;
use super::scrape::{Latest, render_counters, render_durations, valid_labels};

fn row(queue: &str, metric: &str, value: f64) -> Total {
    Total {
        queue: queue.into(),
        metric: metric.into(),
        value,
    }
}

#[test]
fn job_durations_render_as_a_prometheus_histogram() {
    let rows = [
        row("notifications", "duration_count", 4.0),
        row("notifications", "duration_sum_micros", 1_500_000.0),
        row("notifications", "duration_le_0.005", 1.0),
        row("notifications", "duration_le_1", 3.0),
        row("notifications", "duration_le_30", 4.0),
        row("notifications", "processed", 4.0),
    ];
    let mut out = String::new();
    render_durations(&rows, &mut out);
    assert!(out.starts_with("# HELP paygate_job_duration_seconds "), "{out}");
    assert!(out.contains("# TYPE paygate_job_duration_seconds histogram\n"), "{out}");
    for line in [
        "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"0.005\"} 1\n",
        "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"0.5\"} 0\n",
        "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"1\"} 3\n",
        "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"30\"} 4\n",
        "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"+Inf\"} 4\n",
        "paygate_job_duration_seconds_sum{queue=\"notifications\"} 1.5\n",
        "paygate_job_duration_seconds_count{queue=\"notifications\"} 4\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert_eq!(out.matches("_bucket{").count(), DURATION_BUCKETS.len() + 1);
}

#[test]
fn the_bucket_names_written_by_workers_are_understood() {
    // jobs::metrics writes `duration_le_{bound}` with f64's Display.
    for bound in DURATION_BUCKETS {
        let name = format!("duration_le_{bound}");
        let mut out = String::new();
        render_durations(&[row("refunds", &name, 7.0)], &mut out);
        assert!(out.contains(&format!("le=\"{bound}\"}} 7\n")), "{name}: {out}");
    }
}

fn counter(name: &str, labels: &str, value: f64) -> BusinessCounter {
    BusinessCounter {
        name: name.into(),
        labels: labels.into(),
        value,
    }
}

#[test]
fn business_counters_render_with_one_help_and_type_line_per_name() {
    let mut out = "# TYPE http_requests_total counter\nhttp_requests_total{a=\"b\"} 1".to_string();
    render_counters(
        &[
            counter("billing_payments_total", "status=\"disputed\"", 2.0),
            counter("billing_payments_total", "status=\"paid\"", 5.0),
            counter("billing_refunds_total", "", 1.0),
            counter("http_requests_total", "x=\"y\"", 9.0),
            counter("bad name", "", 1.0),
            counter("billing_refunds_total", "status=\"a\nb\"", 1.0),
        ],
        &mut out,
    );
    assert_eq!(
        out,
        "# TYPE http_requests_total counter\nhttp_requests_total{a=\"b\"} 1\n\
         # HELP billing_payments_total Stripe payments, by status (paid, failed, refunded, disputed).\n\
         # TYPE billing_payments_total counter\n\
         billing_payments_total{status=\"disputed\"} 2\n\
         billing_payments_total{status=\"paid\"} 5\n\
         # HELP billing_refunds_total Refunds ops asked for, by outcome (succeeded, failed).\n\
         # TYPE billing_refunds_total counter\n\
         billing_refunds_total 1\n"
    );
}

#[test]
fn only_well_formed_label_sets_pass() {
    for good in [
        "",
        "status=\"paid\"",
        "a=\"1\",b_2=\"x y\"",
        "a=\"quote \\\" and backslash \\\\ and \\n\"",
        "a=\"\"",
    ] {
        assert!(valid_labels(good), "{good:?}");
    }
    for bad in [
        "status",
        "status=paid",
        "status=\"paid",
        "status=\"paid\",",
        "status=\"paid\" x",
        "1a=\"x\"",
        "a:b=\"x\"",
        "a=\"line\nbreak\"",
        "a=\"bad \\x escape\"",
        "a=\"x\"}} evil{b=\"y\"",
    ] {
        assert!(!valid_labels(bad), "{bad:?}");
    }
}

#[test]
fn only_stripe_like_event_types_become_labels() {
    assert_eq!(
        event_type_label("checkout.session.completed"),
        "checkout.session.completed"
    );
    assert_eq!(event_type_label("invoice_payment.paid"), "invoice_payment.paid");
    for odd in [
        "",
        "Invoice.Paid",
        "invoice.paid\"}",
        "x".repeat(65).as_str(),
        "v2.core.event1",
    ] {
        assert_eq!(event_type_label(odd), "other", "{odd:?}");
    }
}

#[test]
fn unknown_queues_and_no_rows_render_nothing() {
    let mut out = String::new();
    render_durations(&[row("nope", "duration_count", 1.0)], &mut out);
    render_durations(&[], &mut out);
    assert_eq!(out, "");
}

#[tokio::test]
async fn concurrent_scrapes_share_one_read_until_it_is_max_age_old() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    // Real time, at a scale where a loaded machine's pauses stay well inside the margins.
    let max_age = Duration::from_secs(2);
    let latest: Latest<usize> = Latest::new(max_age);
    let reads = Arc::new(AtomicUsize::new(0));
    let read = || {
        let reads = reads.clone();
        async move {
            // A slow aggregate: every other scrape arrives while it runs.
            tokio::time::sleep(Duration::from_millis(200)).await;
            reads.fetch_add(1, Ordering::SeqCst) + 1
        }
    };
    let got = futures::future::join_all((0..100).map(|_| latest.get(read))).await;
    assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for a hundred scrapes");
    assert!(got.iter().all(|n| **n == 1));
    assert_eq!(*latest.get(read).await, 1, "still fresh");
    tokio::time::sleep(max_age + Duration::from_millis(100)).await;
    assert_eq!(*latest.get(read).await, 2, "read again once max_age old");
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}
