DROP TABLE api_tokens;
DROP TABLE user_values;
DROP TABLE users;
