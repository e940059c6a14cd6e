//! Durations as operators write them, for the configuration and the command line alike (a leaf:
//! `build.rs` compiles it too, with the command line's definitions).

/// A duration as an operator writes it: `"72h"`, `"90m"`, `"1h 30m"`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration such as 72h, 30m or 3600 ({e})"))
}
