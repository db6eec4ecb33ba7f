-- Paid chats: the Telegram groups and channels a plan opens (PLANS "chats").

-- What the bot last did about one user in one paid chat: given a single-use invite link (until it
-- is used or expires), seen them join, removed them, or found them out of it. The access job
-- reads it to do nothing twice.
CREATE TABLE chat_access (
    user_id         bigint      NOT NULL,
    chat_id         bigint      NOT NULL,
    -- Whether the user is to be in the chat, as last acted on.
    granted         boolean     NOT NULL,
    -- The unused link the user was sent, while it may still be used.
    invite_link     text,
    link_expires_at timestamptz,
    -- 'link_sent', 'member', 'removing' (a removal begun: the ban is the bot's), 'removed',
    -- 'not_member', 'kept_admin', 'banned' (banned by an administrator: kept so).
    outcome         text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, chat_id)
);

-- Every invite link the bot made, and whom for: a user who joins by somebody else's is removed.
-- A link stays usable after a join (member_limit counts members at once, not joins), so the
-- access job revokes every link of a user and chat but the one it keeps; revoked_at says done.
CREATE TABLE chat_invite_links (
    invite_link text        PRIMARY KEY,
    chat_id     bigint      NOT NULL,
    user_id     bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_by     bigint,
    revoked_at  timestamptz
);
CREATE INDEX chat_invite_links_unrevoked ON chat_invite_links (user_id, chat_id) WHERE revoked_at IS NULL;

-- Who is in which paid chat, as Telegram's chat_member updates (and the bot's own removals) say.
CREATE TABLE chat_members (
    chat_id    bigint      NOT NULL,
    user_id    bigint      NOT NULL,
    -- 'creator', 'administrator', 'member', 'restricted', 'left', 'kicked'.
    status     text        NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
