//! The Ed25519 verification rule, for one signature and for many at once.
//!
//! Every Souk signature is checked here, with one rule (SPEC "Envelopes", step 9):
//!
//! 1. `S` is canonical (`S < ℓ`);
//! 2. `R` is the canonical encoding of a curve point that is not of small order (the key `A` was
//!    held to the same when it was decoded, see [`PublicKey`]);
//! 3. the **cofactored** equation holds: `[8]([S]B - R - [k]A) = 0`, with
//!    `k = SHA-512(R ‖ A ‖ digest) mod ℓ`.
//!
//! The cofactored equation is RFC 8032 §5.1.7's own; the cofactorless `[S]B = R + [k]A` that
//! libsodium and dalek's `verify_strict` check is the stricter option the RFC allows. The two
//! differ only on signatures whose `R` carries a torsion component that `[S]B - [k]A` lacks, which
//! only the key's holder can make (changing `R` changes `k`), and which no honest signer
//! produces. Souk takes the cofactored rule because it is the one that batch verification decides
//! exactly (as Zcash's ZIP-215 did, for the same reason): a batch multiplies the random linear
//! combination by the cofactor, which removes torsion in the batch exactly as in the single
//! check. So [`verify_many`] accepts a set of signatures if and only if [`verify_one`] accepts
//! each of them (up to a 2⁻¹²⁸ chance of accepting a set that holds a bad one), and a server
//! that checks a page of a thousand envelopes at once decides every one of them as a phone that
//! checks it alone.
//!
//! A batch costs about a third of checking one signature at a time: one multi-scalar
//! multiplication over every `R`, every distinct key and the base point (a store's listings
//! share their key, so a key enters once however many of its signatures are in the batch).

use std::collections::HashMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity as _, VartimeMultiscalarMul as _};
use sha2::{Digest as _, Sha512};

use crate::identity::PublicKey;

/// Below this many signatures a batch is not cheaper than checking each alone.
const MIN_BATCH: usize = 4;

/// One signature to check: who signed, the 32-byte digest signed, the 64 signature bytes.
pub(crate) type Item<'a> = (&'a PublicKey, &'a [u8; 32], &'a [u8; 64]);

/// A signature that passed the checks of its encoding, ready for the equation.
struct Parsed {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Checks the encodings of `R` and `S` and computes `k`; `None` if an encoding is refused.
fn parse(key: &PublicKey, digest: &[u8; 32], signature: &[u8; 64]) -> Option<Parsed> {
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    let s_bytes: [u8; 32] = s_bytes.try_into().ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    // A canonical encoding that is not one of the eight small-order points' is a point that is
    // not of small order, if it is a point at all (decompression decides).
    if !crate::identity::is_canonical_encoding(&r_bytes)
        || crate::identity::SMALL_ORDER_ENCODINGS.contains(&r_bytes)
    {
        return None;
    }
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r_bytes)
            .chain_update(key.as_bytes())
            .chain_update(digest),
    );
    Some(Parsed { r, s, k })
}

/// The cofactored equation for one parsed signature.
fn equation_holds(key: &PublicKey, parsed: &Parsed) -> bool {
    // [S]B - [k]A, computed as [k](-A) + [S]B.
    let recomputed = EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &parsed.k,
        &-key.edwards_point(),
        &parsed.s,
    );
    (parsed.r - recomputed).mul_by_cofactor().is_identity()
}

/// Whether `signature` is `key`'s signature over `digest` under Souk's rule (module docs).
pub(crate) fn verify_one(key: &PublicKey, digest: &[u8; 32], signature: &[u8; 64]) -> bool {
    parse(key, digest, signature).is_some_and(|parsed| equation_holds(key, &parsed))
}

/// The verdict of [`verify_one`] for every item, in order, computed in batches.
///
/// A batch that fails is split in two and each half checked again, going on into the half that
/// fails, so one bad signature among many costs two multi-scalar multiplications of halving size
/// per level; when both halves of a failed batch fail too, bad signatures are common and the rest are checked one by one, so a flood of forgeries
/// costs about what checking them one by one would.
pub(crate) fn verify_many(items: &[Item<'_>]) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    let mut parsed: Vec<(usize, Parsed)> = Vec::with_capacity(items.len());
    for (index, (key, digest, signature)) in items.iter().enumerate() {
        if let Some(p) = parse(key, digest, signature) {
            parsed.push((index, p));
        }
    }
    let Some(weights) = random_weights(parsed.len()) else {
        // No randomness from the system: check one by one (same verdicts, slower).
        one_by_one(
            items,
            parsed.iter().map(|(index, p)| (*index, p)),
            &mut verdicts,
        );
        return verdicts;
    };
    let all: Vec<Weighted<'_>> = parsed
        .iter()
        .zip(weights)
        .map(|((index, p), z)| (*index, p, z))
        .collect();
    settle(items, &all, &mut verdicts);
    verdicts
}

/// A parsed signature with its place among the items and its random weight.
type Weighted<'a> = (usize, &'a Parsed, Scalar);

/// Decides `part`: as a whole when it is large enough, else one by one.
fn settle(items: &[Item<'_>], part: &[Weighted<'_>], verdicts: &mut [bool]) {
    if part.len() < MIN_BATCH {
        one_by_one(items, unweighted(part), verdicts);
    } else if batch_holds(items, part) {
        mark(part, verdicts);
    } else {
        split_failed(items, part, verdicts);
    }
}

/// Decides `part`, whose batch failed: checks its halves, and goes on into the one that fails.
fn split_failed(items: &[Item<'_>], part: &[Weighted<'_>], verdicts: &mut [bool]) {
    let (left, right) = part.split_at(part.len() / 2);
    let left_holds = left.len() >= MIN_BATCH && batch_holds(items, left);
    let right_holds = right.len() >= MIN_BATCH && batch_holds(items, right);
    // A half too small to batch counts as failed here and is decided one by one below.
    let failed = |half: &[Weighted<'_>], verdicts: &mut [bool]| {
        if half.len() < MIN_BATCH {
            one_by_one(items, unweighted(half), verdicts);
        } else {
            split_failed(items, half, verdicts);
        }
    };
    match (left_holds, right_holds) {
        // With the same weights the halves' sums add up to the whole's, so two good halves
        // under a bad whole cannot happen; were it to, deciding one by one is still right.
        (true, true) | (false, false) => one_by_one(items, unweighted(part), verdicts),
        (true, false) => {
            mark(left, verdicts);
            failed(right, verdicts);
        }
        (false, true) => {
            mark(right, verdicts);
            failed(left, verdicts);
        }
    }
}

fn unweighted<'a>(part: &'a [Weighted<'a>]) -> impl Iterator<Item = (usize, &'a Parsed)> {
    part.iter().map(|(index, p, _)| (*index, *p))
}

fn mark(part: &[Weighted<'_>], verdicts: &mut [bool]) {
    for (index, _, _) in part {
        verdicts[*index] = true;
    }
}

fn one_by_one<'a>(
    items: &[Item<'_>],
    part: impl Iterator<Item = (usize, &'a Parsed)>,
    verdicts: &mut [bool],
) {
    for (index, p) in part {
        verdicts[index] = equation_holds(items[index].0, p);
    }
}

/// The batch equation: `[8](Σ zᵢRᵢ + Σ_A (Σ_{i: Aᵢ = A} zᵢkᵢ)A - (Σ zᵢSᵢ)B) = 0`.
fn batch_holds(items: &[Item<'_>], part: &[Weighted<'_>]) -> bool {
    let mut scalars: Vec<Scalar> = Vec::with_capacity(part.len() + part.len() / 4 + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(scalars.capacity());
    let mut key_slot: HashMap<&[u8; 32], usize> = HashMap::new();
    let mut key_scalars: Vec<Scalar> = Vec::new();
    let mut key_points: Vec<EdwardsPoint> = Vec::new();
    let mut base = Scalar::ZERO;
    for (index, p, z) in part {
        let key = items[*index].0;
        scalars.push(*z);
        points.push(p.r);
        base -= z * p.s;
        let slot = *key_slot.entry(key.as_bytes()).or_insert_with(|| {
            key_scalars.push(Scalar::ZERO);
            key_points.push(key.edwards_point());
            key_points.len() - 1
        });
        key_scalars[slot] += z * p.k;
    }
    scalars.extend(key_scalars);
    points.extend(key_points);
    scalars.push(base);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// A random 128-bit weight per signature, from the operating system; `None` if it has none to
/// give.
fn random_weights(count: usize) -> Option<Vec<Scalar>> {
    let mut bytes = vec![0u8; count * 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(
        bytes
            .chunks_exact(16)
            .map(|chunk| {
                let mut wide = [0u8; 16];
                wide.copy_from_slice(chunk);
                Scalar::from(u128::from_le_bytes(wide))
            })
            .collect(),
    )
}
