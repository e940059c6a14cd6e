DROP TRIGGER users_counted_out;
DROP TRIGGER users_counted_in;
DROP TABLE user_count_deltas;
