//! Which location holds which shard of an object.
//!
//! Every object has one shard on each of the `k + m` locations. The assignment is rotated by the
//! object id so parity (written on every put, read only on damage) and the first data shard are
//! spread over all disks instead of piling onto the same ones.

use crate::format::ObjectId;

/// The slot (location index) holding shard `shard` of `object` in a store of `slots` locations.
pub fn slot_of_shard(object: ObjectId, shard: usize, slots: usize) -> usize {
    (shard + rotation(object, slots)) % slots
}

/// The shard of `object` that slot `slot` holds.
pub fn shard_of_slot(object: ObjectId, slot: usize, slots: usize) -> usize {
    (slot + slots - rotation(object, slots)) % slots
}

fn rotation(object: ObjectId, slots: usize) -> usize {
    usize::from(u16::from_le_bytes([object.0[0], object.0[1]])) % slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_a_bijection_and_its_inverse_matches() {
        for slots in 1..12 {
            for key in ["a", "b", "c", "some/longer/key"] {
                let object = ObjectId::of_key(key);
                let mut seen = vec![false; slots];
                for shard in 0..slots {
                    let slot = slot_of_shard(object, shard, slots);
                    assert!(!seen[slot]);
                    seen[slot] = true;
                    assert_eq!(shard_of_slot(object, slot, slots), shard);
                }
            }
        }
    }
}
