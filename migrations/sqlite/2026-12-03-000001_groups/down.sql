DROP TABLE group_groups;
DROP TABLE group_users;
DROP TABLE groups;
