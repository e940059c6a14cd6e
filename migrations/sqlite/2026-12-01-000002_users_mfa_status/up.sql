-- A copy of each user's factor status on the user's row, kept by a trigger, so that a list of
-- the users with one status (the console's MFA filter) walks one index in creation order and
-- counts from it, instead of joining every factor row. mfa_factors.status stays the truth.
ALTER TABLE users ADD COLUMN mfa_status TEXT NOT NULL DEFAULT 'none';
UPDATE users SET mfa_status = (SELECT f.status FROM mfa_factors f WHERE f.user_id = users.id)
 WHERE EXISTS (SELECT 1 FROM mfa_factors f WHERE f.user_id = users.id AND f.status <> 'none');
CREATE INDEX users_mfa_status ON users (mfa_status, created_at, id);
-- A factor row is created with status 'none' (the column's default): only changes are copied.
CREATE TRIGGER mfa_factors_status_copy AFTER UPDATE OF status ON mfa_factors
WHEN OLD.status IS NOT NEW.status
BEGIN
  UPDATE users SET mfa_status = NEW.status WHERE id = NEW.user_id;
END;
