use super::*;
use proptest::prelude::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn a_receive_done_far_ahead_of_the_load_gives_up_one_request() {
    assert_eq!(next_window(16, 16, ms(2), ms(20)), 15);
    assert_eq!(next_window(1, 16, ms(1), ms(20)), 1, "never below one");
}

#[test]
fn a_receive_inside_the_band_keeps_its_window() {
    assert_eq!(next_window(4, 16, ms(10), ms(20)), 4);
    assert_eq!(next_window(4, 16, ms(14), ms(20)), 4);
}

#[test]
fn a_late_receive_grows_in_proportion_and_never_past_the_setting() {
    // 1.5 of the load with 2 in flight: 2 * 1.5 / 0.55 = 5.5, so 6.
    assert_eq!(next_window(2, 16, ms(30), ms(20)), 6);
    // Just above the band: at least one more.
    assert_eq!(next_window(4, 16, ms(15), ms(20)), 6);
    assert_eq!(next_window(8, 16, ms(200), ms(20)), 16);
    // Over a real network a batch's receive takes longer than its load: the setting stays.
    assert_eq!(next_window(16, 16, ms(60), ms(15)), 16);
}

#[test]
fn no_load_time_means_no_evidence() {
    assert_eq!(next_window(3, 8, ms(5), Duration::ZERO), 8);
}

proptest! {
    #[test]
    fn the_window_stays_between_one_and_the_setting(
        window in 0usize..100, cap in 0usize..65, receive in 0u64..10_000, load in 0u64..10_000,
    ) {
        let w = next_window(window, cap, Duration::from_micros(receive), Duration::from_micros(load));
        prop_assert!(w >= 1 && w <= cap.max(1));
        // Early receives never grow the window; late ones never shrink it.
        let share = receive as f64 / load as f64;
        if load > 0 && share < SHRINK_BELOW {
            prop_assert!(w <= window.clamp(1, cap.max(1)));
        }
        if load > 0 && share > GROW_ABOVE {
            prop_assert!(w >= window.clamp(1, cap.max(1)));
        }
    }
}
