-- SCIM Groups. The body holds every attribute but `members`, which live in the two
-- membership tables below: a change of membership is a row inserted or deleted, never a
-- rewrite of the whole list.
CREATE TABLE groups (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    -- displayName folded as userName is: unique ignoring case
    display_name_key TEXT NOT NULL UNIQUE,
    external_id TEXT,
    body TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'scim',
    version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX groups_external_id ON groups (external_id);
CREATE INDEX groups_created_at ON groups (created_at, id);

-- Members that are users, indexed both ways (a group's members; a user's groups).
CREATE TABLE group_users (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_users_user ON group_users (user_id, group_id);

-- Members that are groups (nesting; cycles are allowed and every reader stops at them).
CREATE TABLE group_groups (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    member_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX group_groups_member ON group_groups (member_id, group_id);
