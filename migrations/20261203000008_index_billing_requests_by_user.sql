-- A user's latest billing requests, newest first: the per-user limit counts them and a repeated
-- request finds the pending one to answer with (jobs::billing::requests::create).
CREATE INDEX billing_requests_by_user ON billing_requests (user_id, created_at DESC, id DESC);
