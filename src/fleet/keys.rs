//! The fleet's key names under its prefix (see `fleet/mod.rs` for what each holds).

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key of the fleet is.
#[derive(Debug, PartialEq)]
pub(crate) enum Key<'a> {
    Leader,
    State(&'a str),
    Member(&'a str),
    Command(&'a str),
    Result(&'a str),
    Other,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    /// Every key of the fleet starts with this.
    pub(crate) fn all(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    pub(crate) fn state(&self, service: &str) -> String {
        format!("{}state/{service}", self.prefix)
    }

    pub(crate) fn member(&self, instance: &str) -> String {
        format!("{}members/{instance}", self.prefix)
    }

    pub(crate) fn command(&self, id: &str) -> String {
        format!("{}commands/{id}", self.prefix)
    }

    pub(crate) fn result(&self, id: &str) -> String {
        format!("{}results/{id}", self.prefix)
    }

    pub(crate) fn parse<'a>(&self, key: &'a [u8]) -> Key<'a> {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
        else {
            return Key::Other;
        };
        if rest == "leader" {
            return Key::Leader;
        }
        let Some((kind, name)) = rest.split_once('/') else {
            return Key::Other;
        };
        match kind {
            "state" => Key::State(name),
            "members" => Key::Member(name),
            "commands" => Key::Command(name),
            "results" => Key::Result(name),
            _ => Key::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/cutover/prod/");
        assert_eq!(keys.all(), "/cutover/prod/");
        assert_eq!(keys.parse(keys.leader().as_bytes()), Key::Leader);
        assert_eq!(keys.parse(keys.state("api").as_bytes()), Key::State("api"));
        assert_eq!(keys.parse(keys.member("w1").as_bytes()), Key::Member("w1"));
        assert_eq!(keys.parse(keys.command("7").as_bytes()), Key::Command("7"));
        assert_eq!(keys.parse(keys.result("7").as_bytes()), Key::Result("7"));
        assert_eq!(keys.parse(b"/cutover/prodx/leader"), Key::Other);
        assert_eq!(keys.parse(b"/cutover/prod/leaderx"), Key::Other);
    }
}
