DROP TRIGGER users_counted_out ON users;
DROP TRIGGER users_counted_in ON users;
DROP FUNCTION users_count_out();
DROP FUNCTION users_count_in();
DROP FUNCTION user_count_add(BIGINT);
DROP FUNCTION user_count_fold();
DROP TABLE user_count_deltas;
