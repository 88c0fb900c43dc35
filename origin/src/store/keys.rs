//! Every Redis key's name. A product's keys all carry its hash tag (`fg:{<productId>}:…`),
//! so every script touches one cluster slot; `lua/README.md` documents each key and its
//! bound.

use uuid::Uuid;

/// The keys of one product; all carry the product's hash tag.
#[derive(Debug, Clone)]
pub struct ProductKeys {
    tag: String,
}

impl ProductKeys {
    pub fn new(product_id: Uuid) -> Self {
        Self { tag: format!("fg:{{{product_id}}}") }
    }
    pub fn product(&self) -> String {
        format!("{}:product", self.tag)
    }
    pub fn holders(&self) -> String {
        format!("{}:holders", self.tag)
    }
    pub fn slot(&self, slot_id: Uuid) -> String {
        format!("{}:slot:{slot_id}", self.tag)
    }
    /// An edge-signed acquisition of this product that was decided (the replay guard).
    pub fn seen(&self, request_id: &str) -> String {
        format!("{}:seen:{request_id}", self.tag)
    }
    pub fn expiry(&self) -> String {
        format!("{}:expiry", self.tag)
    }
    pub fn reminders(&self) -> String {
        format!("{}:reminders", self.tag)
    }
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }
    /// The product's public-log stream (`lua/lib.lua` derives it from the product key).
    pub fn log(&self) -> String {
        format!("{}:log", self.tag)
    }
    pub fn payment(&self, payment_id: Uuid) -> String {
        format!("{}:payment:{payment_id}", self.tag)
    }
    /// Payments whose charge submission is not yet confirmed by the gateway.
    pub fn charges(&self) -> String {
        format!("{}:charges", self.tag)
    }
    /// PENDING payments whose charge the processor has, scored by when to ask it for the
    /// outcome if no webhook came (reconciliation).
    pub fn settling(&self) -> String {
        format!("{}:settling", self.tag)
    }
    /// Payments that succeeded too late and await their refund.
    pub fn refunds(&self) -> String {
        format!("{}:refunds", self.tag)
    }
    /// Acquisitions the origins refused (the console's refusals a second;
    /// [`crate::store::tally`]).
    pub fn refusals(&self) -> String {
        format!("{}:refusals", self.tag)
    }
    /// The waiting room's state: admission bookkeeping, the auto-mode demand count.
    pub fn queue(&self) -> String {
        format!("{}:queue", self.tag)
    }
    /// Buyers in line, scored by their place.
    pub fn queue_waiting(&self) -> String {
        format!("{}:queue:waiting", self.tag)
    }
    /// Admitted buyers, scored by their pass's expiry.
    pub fn queue_admitted(&self) -> String {
        format!("{}:queue:admitted", self.tag)
    }
    /// Admissions in order, for the checker.
    /// The public log's view of each join: `<pseudonym> <joinedMs>` by buyer.
    pub fn queue_buyers(&self) -> String {
        format!("{}:queue:buyers", self.tag)
    }
    pub fn queue_log(&self) -> String {
        format!("{}:queue:log", self.tag)
    }
    /// Written by each group commit of the product's grants, which then waits for its
    /// replicas to have it ([`crate::store::commit`]).
    pub fn commit(&self) -> String {
        format!("{}:commit", self.tag)
    }
    /// Sold-out refusals stamped before a granted request (possible fairness inversions).
    pub fn refused(&self) -> String {
        format!("{}:refused", self.tag)
    }
}

/// Where a slot or payment id lives: `fg:loc:<id>` → its product id. Written by the origin
/// right after the grant or the payment's creation (single-key commands, outside any
/// script), with a TTL; when it is missing PostgreSQL answers.
pub fn locator(id: Uuid) -> String {
    format!("fg:loc:{id}")
}

/// How many work partitions the products are divided into. A product belongs to one
/// ([`partition_of`]); each partition has its own product index and change log under its own
/// hash tag (so they spread over a cluster's shards and no command spans two), and the
/// workers of several origins divide the partitions between them by lease
/// ([`crate::store::leases`]).
pub const PARTITIONS: u16 = 16;

/// The work partition of a product: its id's low bits (random in UUID v4 and v7, so products
/// created together still spread).
pub fn partition_of(product_id: Uuid) -> u16 {
    (product_id.as_u128() % u128::from(PARTITIONS)) as u16
}

/// The keys of one work partition; all carry the partition's hash tag (`fg:{w07}:…`).
#[derive(Debug, Clone)]
pub struct PartitionKeys {
    tag: String,
}

impl PartitionKeys {
    pub fn new(partition: u16) -> Self {
        Self { tag: format!("fg:{{w{partition:02}}}") }
    }

    pub fn of(product_id: Uuid) -> Self {
        Self::new(partition_of(product_id))
    }

    /// Every product of the partition with sale state in Redis: what its workers sweep.
    pub fn products(&self) -> String {
        format!("{}:products", self.tag)
    }

    /// The partition's products by the time of their last availability change
    /// ([`crate::store::availability`]).
    pub fn changes(&self) -> String {
        format!("{}:changes", self.tag)
    }

    /// Which origin works the partition, until when ([`crate::store::leases`]).
    pub fn owner(&self) -> String {
        format!("{}:owner", self.tag)
    }
}

/// The origins whose workers are alive, scored by their last heartbeat
/// ([`crate::store::leases`]): how many share the partitions.
pub const WORKERS: &str = "fg:{workers}:alive";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_product_hash_tag() {
        let p = Uuid::nil();
        let k = ProductKeys::new(p);
        for key in [
            k.product(),
            k.holders(),
            k.slot(p),
            k.expiry(),
            k.reminders(),
            k.outbox(),
            k.payment(p),
            k.charges(),
            k.refunds(),
            k.refused(),
            k.refusals(),
            k.queue(),
            k.queue_waiting(),
            k.queue_admitted(),
            k.queue_log(),
            k.queue_buyers(),
            k.log(),
        ] {
            assert!(key.starts_with("fg:{00000000-0000-0000-0000-000000000000}:"), "{key}");
        }
    }

    #[test]
    fn products_spread_over_every_partition() {
        let mut seen = [0u32; PARTITIONS as usize];
        for _ in 0..1_600 {
            seen[usize::from(partition_of(Uuid::now_v7()))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
        let k = PartitionKeys::new(7);
        assert_eq!(k.products(), "fg:{w07}:products");
        assert_eq!(k.owner(), "fg:{w07}:owner");
    }
}
