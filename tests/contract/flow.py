"""The API through a client that openapi-python-client generated from openapi/openapi.json,
unmodified (tests/e2e/contract.rs generates it and runs this). The same flow as the Rust
client's: a user signs in, buys by card and reads the entitlement; an operator sends a
notification, runs a campaign and follows its broadcast, retries a dead job, refunds.
Exits non-zero, saying what, on the first thing that is not as the spec says."""

import os
import time

import httpx

from paygate_client import AuthenticatedClient, Client
from paygate_client.api.auth import sign_in_with_telegram
from paygate_client.api.billing import show_checkout, start_checkout
from paygate_client.api.marketing import create_campaign, send_campaign_now, show_broadcast
from paygate_client.api.me import list_my_entitlements
from paygate_client.api.notifications import enqueue_notification
from paygate_client.api.ops import create_refund, list_dead_jobs, retry_job, show_refund
from paygate_client.models import (
    Action,
    AudienceKind,
    BillingRequest,
    BroadcastProgress,
    BroadcastStarted,
    CampaignRequest,
    CampaignView,
    CheckoutRequest,
    DeadJobPage,
    Entitlements,
    JobChanged,
    Notification,
    NotificationAccepted,
    PromoButtonRequest,
    PromoRequest,
    Queue,
    Refund,
    RefundProvider,
    RefundRequest,
    RefundState,
    RequestState,
    Session,
    SignInRequest,
)

API = os.environ["PAYGATE_API"]
USER = int(os.environ["PAYGATE_USER"])
DEAD_JOB = int(os.environ["PAYGATE_DEAD_JOB"])


def payment_of(checkout_url):
    """The payment intent the fake Stripe's Checkout page pays with: `pi_<tag>_1`, where the tag
    is the session id's first 14 characters after `cs_test_` (sandbox/src/stripe/checkout.rs)."""
    session_id = checkout_url.rsplit("/", 1)[1]
    return f"pi_{session_id.removeprefix('cs_test_')[:14]}_1"


def typed(value, kind):
    assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
    return value


def until(read, done, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


session = typed(
    sign_in_with_telegram.sync(client=Client(API), body=SignInRequest(init_data=os.environ["PAYGATE_INIT_DATA"])),
    Session,
)
assert session.user.id == USER, session
me = AuthenticatedClient(API, token=session.token)

request = typed(
    start_checkout.sync(client=me, body=CheckoutRequest(plan="pro_monthly"), idempotency_key="py-buy-1"),
    BillingRequest,
)
ready = typed(show_checkout.sync(request.id, client=me, wait=10), BillingRequest)
assert ready.status == RequestState.READY, ready
assert httpx.get(ready.url).status_code == 200
mine = until(lambda: typed(list_my_entitlements.sync(client=me), Entitlements), lambda m: m.entitlements)
assert [e.plan for e in mine.entitlements] == ["pro_monthly"], mine

ops = AuthenticatedClient(API, token=os.environ["PAYGATE_ADMIN_TOKEN"])
accepted = typed(enqueue_notification.sync(client=ops, body=Notification(chat_id=USER, text="Hello from Python")), NotificationAccepted)
assert not accepted.duplicate, accepted

campaign = CampaignRequest(
    name="python",
    audience=AudienceKind.CHATS,
    chat_ids=[USER],
    promos=[PromoRequest(name="a", text="Pro, now in Python", buttons=[PromoButtonRequest(text="More", action=Action.CALLBACK)])],
)
typed(create_campaign.sync(client=ops, body=campaign), CampaignView)
started = typed(send_campaign_now.sync("python", client=ops), BroadcastStarted)
progress = until(
    lambda: typed(show_broadcast.sync(started.broadcast_id, client=ops), BroadcastProgress),
    lambda p: p.fanned_out and p.pending == 0,
)
assert (progress.total, progress.sent) == (1, 1), progress

dead = typed(list_dead_jobs.sync(client=ops, queue=Queue.NOTIFICATIONS), DeadJobPage)
assert [j.id for j in dead.jobs] == [DEAD_JOB], dead
assert typed(retry_job.sync(DEAD_JOB, client=ops), JobChanged).state == "pending"

refund = typed(
    create_refund.sync(
        client=ops,
        body=RefundRequest(provider=RefundProvider.STRIPE, payment=payment_of(ready.url)),
        idempotency_key="py-refund-1",
    ),
    Refund,
)
settled = until(lambda: typed(show_refund.sync(refund.id, client=ops), Refund), lambda r: r.status != RefundState.PENDING)
assert settled.status == RefundState.SUCCEEDED, settled
mine = until(lambda: typed(list_my_entitlements.sync(client=me), Entitlements), lambda m: not m.entitlements)
assert not mine.entitlements, mine
print("python client: every step as the spec says")
