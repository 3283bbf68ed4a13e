//! Verifiable rewards: each term scores a completion against its sample; a reward set is a
//! weighted sum of terms. `catalog` is the static list of terms and parameters that the
//! checker validates `.curr` files against, so the language and the registry cannot drift.

pub mod catalog;
