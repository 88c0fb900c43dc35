//! What carries events from Redis to PostgreSQL: every state change is an event appended
//! by its script to the product's outbox stream ([`events`] is their shape); the
//! [`relay`] moves them to Kafka ([`kafka`]'s producer) or straight to the [`persister`],
//! which applies each to PostgreSQL exactly once.

pub mod events;
pub mod kafka;
pub mod persister;
pub mod relay;
