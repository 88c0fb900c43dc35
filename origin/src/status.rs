//! The statuses of slots and payments: one definition for Redis (the strings the scripts under
//! `lua/` write), PostgreSQL (text columns whose `CHECK` lists the same strings) and JSON.

use serde::{Deserialize, Serialize};
use sqlx::Postgres;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use std::fmt;
use std::str::FromStr;

/// A status string that is none of its type's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

macro_rules! status {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// As Redis, PostgreSQL and JSON spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(UnknownStatus(other.to_owned())),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <str as sqlx::Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <str as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as sqlx::Decode<Postgres>>::decode(value)?.parse()?)
            }
        }

        impl sqlx::Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

status! {
    /// A purchase slot's status.
    SlotStatus {
        /// Held, awaiting payment until its deadline.
        Active => "ACTIVE",
        /// Paid: the unit is sold.
        Completed => "COMPLETED",
        /// Its deadline passed unpaid: the unit went back on sale.
        Expired => "EXPIRED",
    }
}

status! {
    /// A payment's status.
    PaymentStatus {
        /// Submitted to the processor, its outcome not known yet.
        Pending => "PENDING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        /// Succeeded after its slot expired: to be refunded.
        RefundRequired => "REFUND_REQUIRED",
        Refunded => "REFUNDED",
    }
}

impl SlotStatus {
    /// A slot holds its unit (ACTIVE or COMPLETED).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Expired)
    }

    /// The status a reader sees at `now_ms`: an ACTIVE slot past its deadline is EXPIRED
    /// even before a worker has swept it (a slot is due at its deadline).
    pub fn at(self, expires_ms: i64, now_ms: i64) -> Self {
        match self {
            Self::Active if expires_ms <= now_ms => Self::Expired,
            other => other,
        }
    }
}

impl PaymentStatus {
    /// Nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Refunded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn strings<T: Copy>(all: &[T], as_str: impl Fn(T) -> &'static str) -> BTreeSet<String> {
        all.iter().map(|s| as_str(*s).to_owned()).collect()
    }

    /// The statuses a migration's `CHECK (status IN (...))` allows, for the table it creates.
    fn checked(migration: &str) -> BTreeSet<String> {
        let path = format!("{}/../migrations/{migration}", env!("CARGO_MANIFEST_DIR"));
        let sql = std::fs::read_to_string(path).unwrap();
        let list = sql.split("status IN (").nth(1).unwrap().split(')').next().unwrap();
        list.split(',').map(|s| s.trim().trim_matches('\'').to_owned()).collect()
    }

    #[test]
    fn every_status_round_trips_through_its_string_and_json() {
        for s in SlotStatus::ALL {
            assert_eq!(s.as_str().parse::<SlotStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(*s));
            assert_eq!(serde_json::from_value::<PaymentStatus>(s.as_str().into()).unwrap(), *s);
        }
        assert_eq!("active".parse::<SlotStatus>(), Err(UnknownStatus("active".into())));
    }

    #[test]
    fn postgresql_allows_exactly_these_statuses() {
        assert_eq!(
            checked("20261122000003_slots_and_audit.sql"),
            strings(SlotStatus::ALL, SlotStatus::as_str)
        );
        assert_eq!(
            checked("20261122000004_purchases.sql"),
            strings(PaymentStatus::ALL, PaymentStatus::as_str)
        );
    }

    #[test]
    fn an_active_slot_is_expired_from_its_deadline_on() {
        assert_eq!(SlotStatus::Active.at(1000, 999), SlotStatus::Active);
        assert_eq!(SlotStatus::Active.at(1000, 1000), SlotStatus::Expired);
        assert_eq!(SlotStatus::Completed.at(1000, 5000), SlotStatus::Completed);
        assert!(SlotStatus::Completed.is_live() && !SlotStatus::Expired.is_live());
        assert!(PaymentStatus::Refunded.is_final() && !PaymentStatus::RefundRequired.is_final());
    }
}
