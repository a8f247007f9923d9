//! Property tests: the reply reader (what the agent does with any UDP
//! datagram that reaches its NTP socket) never panics, a header reads back
//! as it was written, and a reply is only ever accepted when it echoes the
//! request's own transmit time. Bounded; failures are not persisted into
//! the source tree.

use super::*;
use proptest::prelude::*;

fn packet() -> impl Strategy<Value = Packet> {
    (
        (
            0u8..4,
            0u8..8,
            0u8..8,
            any::<u8>(),
            any::<i8>(),
            any::<i8>(),
        ),
        (any::<u32>(), any::<u32>(), any::<[u8; 4]>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (leap, version, mode, stratum, poll, precision),
                (root_delay, root_dispersion, reference_id),
                (reference, origin, receive, transmit),
            )| Packet {
                leap,
                version,
                mode,
                stratum,
                poll,
                precision,
                root_delay,
                root_dispersion,
                reference_id,
                reference: Timestamp(reference),
                origin: Timestamp(origin),
                receive: Timestamp(receive),
                transmit: Timestamp(transmit),
            },
        )
}

proptest! {
    #![proptest_config(crate::props::bounded(1024))]

    #[test]
    fn any_datagram_is_judged_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        sent in any::<u64>(),
        received in any::<u64>(),
    ) {
        let _ = Packet::decode(&bytes);
        let _ = sample(Timestamp(sent), &bytes, Timestamp(received));
    }

    #[test]
    fn a_header_reads_back_as_written(p in packet(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = p.encode().to_vec();
        // extension fields or a MAC after the header are ignored
        bytes.extend(tail);
        prop_assert_eq!(Packet::decode(&bytes), Ok(p));
        prop_assert!(Packet::decode(&bytes[..PACKET_LEN - 1]).is_err());
    }

    #[test]
    fn a_reply_counts_exactly_when_it_answers_the_request(
        mut p in packet(),
        sent in any::<u64>(),
        received in any::<u64>(),
        echo in any::<bool>(),
        server in any::<bool>(),
    ) {
        if echo {
            p.origin = Timestamp(sent);
        }
        if server {
            p.mode = MODE_SERVER;
            p.version = VERSION;
        }
        let got = sample(Timestamp(sent), &p.encode(), Timestamp(received));
        let answers = p.origin == Timestamp(sent)
            && p.mode == MODE_SERVER
            && (3..=VERSION).contains(&p.version)
            && p.stratum != 0
            && p.stratum < MAX_STRATUM
            && p.leap != LEAP_UNSYNCHRONISED
            && p.transmit != Timestamp::ZERO;
        prop_assert_eq!(got.is_ok(), answers, "{:?}", got);
        if let Ok(s) = got {
            prop_assert!(s.delay_ns >= 0);
            prop_assert_eq!(s.stratum, p.stratum);
        }
    }
}
