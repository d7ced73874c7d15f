//! `CTR_ENTITIES_LIMIT`: how many entities of each type one provider may return
//! for one observable.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntitiesLimit(usize);

impl EntitiesLimit {
    pub const DEFAULT: Self = Self(100);
    pub const MAX: usize = 1000;

    /// A positive integer written in decimal digits; values above [`Self::MAX`]
    /// are clamped. Anything else (zero, negative, fractional, text) is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // All digits, so the only possible parse failure is overflow: clamp it.
        let value = digits.parse::<u64>().unwrap_or(u64::MAX);
        Self::from_u64(value)
    }

    /// The value of the `CTR_ENTITIES_LIMIT` JWT claim: an integer or a numeric
    /// string. A value that is not a positive integer is ignored (`None`), so the
    /// caller falls through to the configured default.
    pub fn from_claim(value: &Value) -> Option<Self> {
        match value {
            Value::Number(number) => number.as_u64().and_then(Self::from_u64),
            Value::String(text) => Self::parse(text),
            _ => None,
        }
    }

    fn from_u64(value: u64) -> Option<Self> {
        match value {
            0 => None,
            n => Some(Self(usize::try_from(n).unwrap_or(Self::MAX).min(Self::MAX))),
        }
    }

    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for EntitiesLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positive_integers_are_accepted() {
        assert_eq!(EntitiesLimit::parse("5").map(EntitiesLimit::get), Some(5));
        assert_eq!(
            EntitiesLimit::parse(" 42 ").map(EntitiesLimit::get),
            Some(42)
        );
        assert_eq!(
            EntitiesLimit::from_claim(&json!(7)).map(EntitiesLimit::get),
            Some(7)
        );
        assert_eq!(
            EntitiesLimit::from_claim(&json!("7")).map(EntitiesLimit::get),
            Some(7)
        );
    }

    #[test]
    fn values_above_the_maximum_are_clamped() {
        assert_eq!(
            EntitiesLimit::parse("1001").map(EntitiesLimit::get),
            Some(1000)
        );
        assert_eq!(
            EntitiesLimit::parse("99999999999999999999999").map(EntitiesLimit::get),
            Some(1000)
        );
        assert_eq!(
            EntitiesLimit::from_claim(&json!(5000)).map(EntitiesLimit::get),
            Some(1000)
        );
    }

    #[test]
    fn anything_that_is_not_a_positive_integer_is_ignored() {
        for text in ["0", "-1", "1.5", "", "ten", "1e3", "+5"] {
            assert_eq!(EntitiesLimit::parse(text), None, "{text:?}");
        }
        for value in [
            json!(0),
            json!(-3),
            json!(2.5),
            json!(null),
            json!(true),
            json!([5]),
        ] {
            assert_eq!(EntitiesLimit::from_claim(&value), None, "{value}");
        }
    }
}
