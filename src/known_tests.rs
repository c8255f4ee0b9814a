use super::*;

#[test]
fn only_committed_work_is_known_after_the_transaction() {
    let mut k = KnownTokens::default();
    k.check_stamp("vault-1");
    k.stored(1, [1, 2]);
    assert!(
        k.contains(1) && k.contains(2),
        "known within the transaction"
    );
    k.abort();
    assert!(!k.contains(1) && !k.contains(2), "an abort forgets");
    k.stored(1, [3]);
    k.commit(100);
    assert!(k.contains(3));
    assert_eq!(k.len(), 1);
}

#[test]
fn an_aborted_subtransaction_forgets_what_it_stored_and_a_committed_one_hands_it_up() {
    let mut k = KnownTokens::default();
    k.check_stamp("v");
    k.stored(1, [10]);
    k.stored(2, [20]); // a batch's subtransaction
    k.stored(3, [30]); // nested in it
    k.subcommit(3, 2);
    k.subabort(2); // the batch failed: 20 and 30 were rolled back with it
    assert!(k.contains(10) && !k.contains(20) && !k.contains(30));
    k.stored(4, [40]);
    k.subcommit(4, 1);
    k.commit(100);
    assert!(k.contains(10) && k.contains(40) && !k.contains(20));
}

#[test]
fn another_vault_forgets_everything() {
    let mut k = KnownTokens::default();
    k.check_stamp("a");
    k.stored(1, [1]);
    k.commit(100);
    k.check_stamp("a");
    assert!(k.contains(1));
    k.check_stamp("b"); // TRUNCATE gave the vault a new file, or a new token key
    assert!(!k.contains(1) && k.is_empty());
}

#[test]
fn the_cap_bounds_memory_and_zero_turns_it_off() {
    let mut k = KnownTokens::default();
    k.check_stamp("v");
    k.stored(1, 0..10u128);
    k.commit(4);
    let kept = (0..10u128).filter(|t| k.contains(*t)).count();
    assert!(
        (1..=4).contains(&kept) && kept == k.len(),
        "{kept} of {}",
        k.len()
    );
    k.stored(1, [100]);
    k.commit(0);
    assert!(k.is_empty() && !k.contains(100));
}
