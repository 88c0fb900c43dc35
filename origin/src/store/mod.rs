//! What owns Redis: a product's sale state under one hash tag, changed only by the scripts
//! under `lua/` ([`inventory`] for slots and products, [`payments`] for payments), read
//! back through one reply reader ([`script`]). [`grants`] keeps Redis within its lease
//! and [`fairness`] orders the acquisitions that reach it; [`durability`] refuses to run
//! on a Redis that could forget what it answered, and [`commit`] holds a grant's answer until
//! its replicas have it; [`availability`] notes which products'
//! availability changed, for the edges' re-checks; [`queue`] is the waiting room. [`redis`]
//! is the connection, to one server or a cluster; [`leases`] divides the workers' partitions
//! between origins.

pub mod availability;
pub mod commit;
pub mod durability;
pub mod fairness;
pub mod grants;
pub mod inventory;
pub mod keys;
pub mod leases;
pub mod payments;
pub mod queue;
pub mod redis;
pub mod scripts;
pub mod tally;
