-- A billing request made in a chat with the bot (a plan paid by card or as a Stars
-- subscription, /billing) carries the chat its link is sent to once the checkout worker has it.
ALTER TABLE billing_requests ADD COLUMN reply_chat_id bigint;
