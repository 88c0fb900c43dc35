//! `transparency_*`: each drop's public log (issue #31) — its head, entries, stored hashes
//! and signed checkpoints. Written by the log builder ([`crate::transparency::builder`]),
//! read by the log's public routes ([`crate::http::transparency`]).

use sqlx::PgExecutor;
use uuid::Uuid;

/// A log's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub size: i64,
    pub signed_size: i64,
}

/// The head of a product's log, locked for this transaction (created empty if it has none).
pub async fn lock_head(db: &mut sqlx::PgConnection, product_id: Uuid) -> sqlx::Result<Head> {
    sqlx::query!(
        "INSERT INTO transparency_logs (product_id) VALUES ($1) ON CONFLICT (product_id) DO NOTHING",
        product_id,
    )
    .execute(&mut *db)
    .await?;
    let row = sqlx::query!(
        "SELECT size, signed_size FROM transparency_logs WHERE product_id = $1 FOR UPDATE",
        product_id,
    )
    .fetch_one(&mut *db)
    .await?;
    Ok(Head { size: row.size, signed_size: row.signed_size })
}

/// A product's log head, if it has a log.
pub async fn head(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Option<Head>> {
    let row = sqlx::query!(
        "SELECT size, signed_size FROM transparency_logs WHERE product_id = $1",
        product_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Head { size: r.size, signed_size: r.signed_size }))
}

/// Stored hashes by index (those present).
pub async fn hashes(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    indexes: &[i64],
) -> sqlx::Result<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query!(
        "SELECT sidx, hash FROM transparency_hashes WHERE product_id = $1 AND sidx = ANY($2)",
        product_id,
        indexes,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.sidx, r.hash)).collect())
}

/// One built entry: its index, bytes, and buyer pseudonym (none for stock entries).
pub type EntryRow = (i64, Vec<u8>, Option<String>);

/// Appends built entries and their stored hashes, and moves the head to `size`.
pub async fn append(
    db: &mut sqlx::PgConnection,
    product_id: Uuid,
    entries: &[EntryRow],
    hashes: &[(i64, Vec<u8>)],
    size: i64,
) -> sqlx::Result<()> {
    let (idx, rest): (Vec<i64>, Vec<_>) =
        entries.iter().map(|(i, e, b)| (*i, (e.clone(), b.clone()))).unzip();
    let (bodies, buyers): (Vec<Vec<u8>>, Vec<Option<String>>) = rest.into_iter().unzip();
    sqlx::query!(
        "INSERT INTO transparency_entries (product_id, idx, entry, buyer) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[], $4::text[])",
        product_id,
        &idx,
        &bodies,
        &buyers as &[Option<String>],
    )
    .execute(&mut *db)
    .await?;
    let (sidx, hash): (Vec<i64>, Vec<Vec<u8>>) = hashes.iter().cloned().unzip();
    sqlx::query!(
        "INSERT INTO transparency_hashes (product_id, sidx, hash) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[])",
        product_id,
        &sidx,
        &hash,
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!("UPDATE transparency_logs SET size = $2 WHERE product_id = $1", product_id, size,)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Records a signed checkpoint of `size` entries as the log's newest.
pub async fn record_checkpoint(
    db: &mut sqlx::PgConnection,
    product_id: Uuid,
    size: i64,
    note: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO transparency_checkpoints (product_id, size, note) VALUES ($1, $2, $3) \
         ON CONFLICT (product_id, size) DO NOTHING",
        product_id,
        size,
        note,
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!(
        "UPDATE transparency_logs SET signed_size = $2, signed_at = now() WHERE product_id = $1",
        product_id,
        size,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// The newest signed checkpoint of a product's log: its size and note.
pub async fn checkpoint(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
) -> sqlx::Result<Option<(i64, String)>> {
    let row = sqlx::query!(
        "SELECT size, note FROM transparency_checkpoints WHERE product_id = $1 \
         ORDER BY size DESC LIMIT 1",
        product_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.size, r.note)))
}

/// Entries `from..to` of a product's log, in order.
pub async fn entries(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<Vec<u8>>> {
    sqlx::query_scalar!(
        "SELECT entry FROM transparency_entries WHERE product_id = $1 AND idx >= $2 AND idx < $3 \
         ORDER BY idx",
        product_id,
        from,
        to,
    )
    .fetch_all(db)
    .await
}

/// A buyer's newest entry below `size` in a product's log: its index and bytes.
pub async fn newest_of(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    buyer: &str,
    size: i64,
) -> sqlx::Result<Option<(i64, Vec<u8>)>> {
    let row = sqlx::query!(
        "SELECT idx, entry FROM transparency_entries \
         WHERE product_id = $1 AND buyer = $2 AND idx < $3 ORDER BY idx DESC LIMIT 1",
        product_id,
        buyer,
        size,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.idx, r.entry)))
}

/// Entry `idx` of a product's log if it is below `size` and names `buyer`.
pub async fn entry_of(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    buyer: &str,
    idx: i64,
    size: i64,
) -> sqlx::Result<Option<(i64, Vec<u8>)>> {
    let row = sqlx::query!(
        "SELECT idx, entry FROM transparency_entries \
         WHERE product_id = $1 AND buyer = $2 AND idx = $3 AND idx < $4",
        product_id,
        buyer,
        idx,
        size,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.idx, r.entry)))
}
