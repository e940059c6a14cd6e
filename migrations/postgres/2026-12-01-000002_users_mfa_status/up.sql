-- A copy of each user's factor status on the user's row, kept by a trigger, so that a list of
-- the users with one status (the console's MFA filter) walks one index in creation order and
-- counts from it, instead of joining every factor row. mfa_factors.status stays the truth.
ALTER TABLE users ADD COLUMN mfa_status TEXT NOT NULL DEFAULT 'none';
UPDATE users u SET mfa_status = f.status FROM mfa_factors f WHERE f.user_id = u.id AND f.status <> 'none';
CREATE INDEX users_mfa_status ON users (mfa_status, created_at, id);
-- A factor row is created with status 'none' (the column's default): only changes are copied.
CREATE FUNCTION copy_mfa_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE users SET mfa_status = NEW.status WHERE id = NEW.user_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER mfa_factors_status_copy AFTER UPDATE OF status ON mfa_factors
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION copy_mfa_status();
