//! The order state machine, as a specification: the table of every allowed step, and proof that
//! nothing outside it is allowed.

use souk_protocol::order::{
    Actor, Event, Order, OrderError, OrderState, Payment, event_for_message, next_state,
};
use souk_protocol::pb;

use Actor::{Buyer, Chain, Moderator, Seller};
use Event as E;
use OrderState as S;

/// Every allowed step: from, event, who may cause it, to, and whether the event needs a moderated
/// order (only a moderated order ever reaches `TimedOut`, so leaving it needs no second check).
const ALLOWED: &[(OrderState, Event, &[Actor], OrderState, bool)] = &[
    (
        S::Requested,
        E::Confirm,
        &[Seller],
        S::AwaitingPayment,
        false,
    ),
    (S::Requested, E::Decline, &[Seller], S::Declined, false),
    (
        S::Requested,
        E::Cancel,
        &[Buyer, Seller],
        S::Canceled,
        false,
    ),
    (
        S::AwaitingPayment,
        E::Cancel,
        &[Buyer, Seller],
        S::Canceled,
        false,
    ),
    (S::AwaitingPayment, E::Fund, &[Chain], S::Funded, false),
    (
        S::Funded,
        E::FundingConfirmed,
        &[Chain],
        S::Confirmed,
        false,
    ),
    (S::Funded, E::Ship, &[Seller], S::Shipped, false),
    (S::Confirmed, E::Ship, &[Seller], S::Shipped, false),
    (S::Shipped, E::Complete, &[Buyer], S::Completed, false),
    (S::TimedOut, E::Complete, &[Buyer], S::Completed, false),
    (S::Funded, E::Refund, &[Seller], S::Refunded, false),
    (S::Confirmed, E::Refund, &[Seller], S::Refunded, false),
    (S::Shipped, E::Refund, &[Seller], S::Refunded, false),
    (S::TimedOut, E::Refund, &[Seller], S::Refunded, false),
    (
        S::Funded,
        E::OpenDispute,
        &[Buyer, Seller],
        S::Disputed,
        true,
    ),
    (
        S::Confirmed,
        E::OpenDispute,
        &[Buyer, Seller],
        S::Disputed,
        true,
    ),
    (
        S::Shipped,
        E::OpenDispute,
        &[Buyer, Seller],
        S::Disputed,
        true,
    ),
    (S::Disputed, E::Resolve, &[Moderator], S::Resolved, true),
    (S::Confirmed, E::Timeout, &[Chain], S::TimedOut, true),
    (S::Shipped, E::Timeout, &[Chain], S::TimedOut, true),
    (S::Disputed, E::Timeout, &[Chain], S::TimedOut, true),
    (S::TimedOut, E::Claim, &[Seller], S::Claimed, true),
];

const ACTORS: [Actor; 4] = [Buyer, Seller, Moderator, Chain];

fn allowed(
    from: OrderState,
    event: Event,
) -> Option<&'static (OrderState, Event, &'static [Actor], OrderState, bool)> {
    ALLOWED.iter().find(|(f, e, ..)| *f == from && *e == event)
}

#[test]
fn every_state_event_actor_and_payment_does_exactly_what_the_table_says() {
    let mut checked = 0;
    for payment in [Payment::Direct, Payment::Moderated] {
        for from in S::ALL {
            for event in E::ALL {
                for actor in ACTORS {
                    let mut order = Order::restore([1; 32], payment, from, Vec::new());
                    let before = order.clone();
                    let result = order.apply(event, actor, 1_000);
                    checked += 1;
                    let expected = match allowed(from, event) {
                        _ if from.is_final() => Err("order_finished"),
                        Some((.., true)) if payment == Payment::Direct => Err("not_moderated"),
                        Some((_, _, actors, to, _)) if actors.contains(&actor) => Ok(*to),
                        _ if event.needs_moderator() && payment == Payment::Direct => {
                            Err("not_moderated")
                        }
                        _ if !event.actors().contains(&actor) => Err("wrong_actor"),
                        _ => Err("illegal_transition"),
                    };
                    match (result, expected) {
                        (Ok(step), Ok(to)) => {
                            assert_eq!(step.to, to);
                            assert_eq!(order.state(), to);
                            assert_eq!(order.history(), &[step]);
                        }
                        (Err(error), Err(code)) => {
                            assert_eq!(error.code(), code, "{payment:?} {from} {event} by {actor}");
                            assert_eq!(order, before, "a refused event changes nothing");
                        }
                        (got, want) => panic!(
                            "{payment:?} {from} {event} by {actor}: got {got:?}, want {want:?}"
                        ),
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 13 * 12 * 4);
    for (_, event, _, _, moderated) in ALLOWED {
        assert_eq!(event.needs_moderator(), *moderated, "{event}");
    }
}

#[test]
fn the_table_and_the_machine_agree_on_every_pair() {
    for from in S::ALL {
        for event in E::ALL {
            assert_eq!(
                next_state(from, event),
                allowed(from, event).map(|(.., to, _)| *to),
                "{from} {event}"
            );
        }
    }
}

#[test]
fn final_states_are_exactly_those_with_no_way_out() {
    for state in S::ALL {
        let has_exit = E::ALL.iter().any(|e| next_state(state, *e).is_some());
        assert_eq!(state.is_final(), !has_exit, "{state}");
    }
}

#[test]
fn every_state_can_be_reached_and_every_order_can_end() {
    // Breadth-first over the table from Requested: every state is reachable, and from every
    // reachable state some final state is reachable (no order can be stuck by protocol).
    let mut reachable = vec![S::Requested];
    let mut i = 0;
    while i < reachable.len() {
        for (from, _, _, to, _) in ALLOWED {
            if *from == reachable[i] && !reachable.contains(to) {
                reachable.push(*to);
            }
        }
        i += 1;
    }
    assert_eq!(reachable.len(), S::ALL.len());
    for state in S::ALL {
        let mut seen = vec![state];
        let mut j = 0;
        while j < seen.len() && !seen[j].is_final() {
            for (from, _, _, to, _) in ALLOWED {
                if *from == seen[j] && !seen.contains(to) {
                    seen.push(*to);
                }
            }
            j += 1;
        }
        assert!(seen.iter().any(|s| s.is_final()), "{state} cannot end");
    }
}

#[test]
fn a_moderated_purchase_walks_the_happy_path_and_keeps_its_history() {
    let mut order = Order::new([7; 32], Payment::Moderated);
    let steps = [
        (E::Confirm, Seller),
        (E::Fund, Chain),
        (E::FundingConfirmed, Chain),
        (E::Ship, Seller),
        (E::Complete, Buyer),
    ];
    for (at, (event, actor)) in (1..).zip(steps) {
        order.apply(event, actor, at).expect("allowed");
    }
    assert_eq!(order.state(), S::Completed);
    let path: Vec<_> = order.history().iter().map(|s| s.to).collect();
    assert_eq!(
        path,
        [
            S::AwaitingPayment,
            S::Funded,
            S::Confirmed,
            S::Shipped,
            S::Completed
        ]
    );
    assert_eq!(
        order.apply(E::OpenDispute, Buyer, 9),
        Err(OrderError::Finished {
            state: S::Completed
        })
    );
}

#[test]
fn a_direct_order_has_no_dispute_and_no_timeout() {
    let mut order = Order::new([8; 32], Payment::Direct);
    order.apply(E::Confirm, Seller, 1).expect("allowed");
    order.apply(E::Fund, Chain, 2).expect("allowed");
    assert_eq!(
        order.apply(E::OpenDispute, Buyer, 3).unwrap_err().code(),
        "not_moderated"
    );
    assert_eq!(
        order.apply(E::Timeout, Chain, 3).unwrap_err().code(),
        "not_moderated"
    );
}

#[test]
fn a_cancellation_means_cancel_before_payment_and_refund_after() {
    let cancel = pb::message::Body::Cancel(pb::Cancellation::default());
    for state in S::ALL {
        let event = event_for_message(state, &cancel);
        let expected = if matches!(state, S::Requested | S::AwaitingPayment) {
            E::Cancel
        } else {
            E::Refund
        };
        assert_eq!(event, Some(expected), "{state}");
    }
    let informative = [
        pb::message::Body::Payment(pb::PaymentNotice::default()),
        pb::message::Body::Chat(pb::Chat::default()),
        pb::message::Body::Evidence(pb::Evidence::default()),
        pb::message::Body::Psbt(pb::PsbtToSign::default()),
        pb::message::Body::Order(pb::OrderRequest::default()),
    ];
    for body in informative {
        assert_eq!(event_for_message(S::Funded, &body), None);
    }
}

#[test]
fn state_names_are_stable_and_round_trip() {
    for state in S::ALL {
        assert_eq!(state.as_str().parse::<OrderState>(), Ok(state));
    }
    assert_eq!(
        "paid".parse::<OrderState>().unwrap_err().code(),
        "unknown_order_state"
    );
    assert_eq!(S::AwaitingPayment.as_str(), "awaiting_payment");
    assert_eq!(S::TimedOut.to_string(), "timed_out");
}
