//! The capabilities a service's bounding set loses (names and numbers are
//! the contract's: `contract::services::capability_number`).

use contract::services::capability_number as number;

/// Every capability number the kernel may know, up to `last_cap`
/// (`/proc/sys/kernel/cap_last_cap`), that `keep` does not name.
pub fn to_drop(keep: &[String], last_cap: u32) -> Vec<u32> {
    let kept: Vec<u32> = keep.iter().filter_map(|n| number(n)).collect();
    (0..=last_cap).filter(|c| !kept.contains(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_list_keeps_only_the_named() {
        let keep = vec!["CAP_NET_BIND_SERVICE".to_string()];
        let drop = to_drop(&keep, 40);
        assert_eq!(drop.len(), 40);
        assert!(!drop.contains(&10));
        assert!(to_drop(&[], 40).contains(&10));
    }
}
