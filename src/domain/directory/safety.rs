//! How many users one full run may deactivate (Entra Connect's "prevent accidental deletes"):
//! a search that suddenly returns fewer entries (a wrong base DN or filter, an ACL change) must
//! not take everyone's access away.

/// The most users a full run may deactivate: `max_percent` of the users whose entries were
/// present, rounded up (one departure from a small directory is not a mass deactivation), and
/// no more than `max` when set.
pub fn deactivation_limit(present: i64, max_percent: f64, max: Option<u64>) -> u64 {
    let by_share = (present as f64 * max_percent / 100.0).ceil() as u64;
    max.map_or(by_share, |n| n.min(by_share))
}

/// Whether a full run may deactivate `count` users: within the limit, or allowed beyond it by
/// hand (`--allow-mass-deactivation`).
pub fn may_deactivate(count: usize, limit: u64, allowed_beyond: bool) -> bool {
    count as u64 <= limit || allowed_beyond
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_share_rounded_up_capped_by_the_count() {
        let cases: &[(i64, f64, Option<u64>, u64)] = &[
            (0, 10.0, None, 0),
            (1, 10.0, None, 1),
            (5, 10.0, None, 1),
            (10, 10.0, None, 1),
            (11, 10.0, None, 2),
            (1000, 10.0, None, 100),
            (1000, 10.0, Some(5), 5),
            (1000, 10.0, Some(500), 100),
            (1000, 0.0, None, 0),
            (1000, 100.0, None, 1000),
            (3, 50.0, None, 2),
        ];
        for &(present, percent, max, limit) in cases {
            assert_eq!(deactivation_limit(present, percent, max), limit, "{present} present, {percent}%, max {max:?}");
        }
    }

    #[test]
    fn beyond_the_limit_only_when_allowed() {
        let cases: &[(usize, u64, bool, bool)] =
            &[(0, 0, false, true), (1, 1, false, true), (2, 1, false, false), (2, 1, true, true), (100, 0, true, true)];
        for &(count, limit, allowed, ok) in cases {
            assert_eq!(may_deactivate(count, limit, allowed), ok, "{count} of limit {limit}, allowed {allowed}");
        }
    }
}
