use super::*;

#[test]
fn unix_epoch_and_era_boundaries() {
    // RFC 5905 figure 4: 1970-01-01 is 2,208,988,800 s into era 0
    assert_eq!(Timestamp::from_unix(0, 0), Timestamp(0x83aa_7e80 << 32));
    assert_eq!(Timestamp(0x83aa_7e80 << 32).to_unix(), (0, 0));
    // era 1 starts 2036-02-07T06:28:16Z = Unix 2,085,978,496: all bits zero
    assert_eq!(Timestamp::from_unix(2_085_978_496, 0), Timestamp(0));
    assert_eq!(Timestamp(0).to_unix(), (2_085_978_496, 0));
    // 2001-01-01T00:00:00Z (the skewed guest) and 2026-06-01T00:00:00Z
    for unix in [978_307_200i64, 1_780_272_000, 2_085_978_495, 2_085_978_497] {
        assert_eq!(Timestamp::from_unix(unix, 0).to_unix(), (unix, 0), "{unix}");
    }
    // the fraction: half a second is 2^31, and nanoseconds survive a round trip
    assert_eq!(
        Timestamp::from_unix(0, 500_000_000).0 & 0xffff_ffff,
        1 << 31
    );
    for nanos in [0, 1, 999, 123_456_789, 999_999_999] {
        assert_eq!(
            Timestamp::from_unix(1_700_000_000, nanos).to_unix().1,
            nanos
        );
    }
    assert_eq!(Timestamp(0x83aa_7e80_ffff_ffff).to_unix(), (1, 0));
}

#[test]
fn differences_work_across_the_era_boundary() {
    let before = Timestamp::from_unix(2_085_978_495, 0); // 1 s before era 1
    let after = Timestamp::from_unix(2_085_978_497, 250_000_000);
    assert_eq!(after.since(before), 2_250_000_000);
    assert_eq!(before.since(after), -2_250_000_000);
    // 25 years, the skew of the lab's time test
    let y2001 = Timestamp::from_unix(978_307_200, 0);
    let y2026 = Timestamp::from_unix(1_767_225_600, 0);
    assert_eq!(y2026.since(y2001), 788_918_400 * 1_000_000_000);
}

/// A client request as ntpdate, chrony and our agent send it: 0x23
/// (leap 0, version 4, mode 3) and the transmit time at bytes 40..48.
#[test]
fn a_request_encodes_to_known_bytes() {
    let p = Packet::request(Timestamp(0xe9a1_b2c3_8000_0000));
    let b = p.encode();
    let mut want = [0u8; 48];
    want[0] = 0x23;
    want[40..48].copy_from_slice(&[0xe9, 0xa1, 0xb2, 0xc3, 0x80, 0, 0, 0]);
    assert_eq!(b, want);
    assert_eq!(Packet::decode(&b), Ok(p));
    assert_eq!(Packet::decode(&b[..47]), Err(NtpError::Short { len: 47 }));
}

#[test]
fn every_field_has_its_place() {
    let p = Packet {
        leap: 0,
        version: 4,
        mode: MODE_SERVER,
        stratum: 1,
        poll: 6,
        precision: -20,
        root_delay: 0x0001_8000,
        root_dispersion: 0x0000_0042,
        reference_id: *b"LOCL",
        reference: Timestamp(0x1111_1111_2222_2222),
        origin: Timestamp(0x3333_3333_4444_4444),
        receive: Timestamp(0x5555_5555_6666_6666),
        transmit: Timestamp(0x7777_7777_8888_8888),
    };
    let b = p.encode();
    assert_eq!(&b[..4], &[0x24, 1, 6, 0xec]);
    assert_eq!(&b[4..8], &[0, 1, 0x80, 0]);
    assert_eq!(&b[8..12], &[0, 0, 0, 0x42]);
    assert_eq!(&b[12..16], b"LOCL");
    assert_eq!(&b[16..20], &[0x11; 4]);
    assert_eq!(&b[24..28], &[0x33; 4]);
    assert_eq!(&b[32..36], &[0x55; 4]);
    assert_eq!(&b[44..48], &[0x88; 4]);
    // extension fields after the header are ignored
    let mut long = b.to_vec();
    long.extend_from_slice(&[9; 20]);
    assert_eq!(Packet::decode(&long), Ok(p));
    assert_eq!(short_to_ns(p.root_delay), 1_500_000_000);
}

fn lab_clock() -> ServerClock {
    ServerClock {
        leap: 0,
        stratum: 1,
        precision: -20,
        root_delay: 0,
        root_dispersion: 0x0000_0010,
        reference_id: *b"LOCL",
        reference: Timestamp(100 << 32),
    }
}

#[test]
fn a_server_answers_client_requests_only() {
    let t1 = Timestamp(1000 << 32);
    let mut req = Packet::request(t1);
    req.poll = 7;
    let (t2, t3) = (Timestamp(2000 << 32), Timestamp((2000 << 32) | 1));
    let reply = answer(&req.encode(), &lab_clock(), t2, t3).unwrap();
    let p = Packet::decode(&reply).unwrap();
    assert_eq!(
        (p.mode, p.version, p.stratum, p.poll),
        (MODE_SERVER, 4, 1, 7)
    );
    assert_eq!(p.origin, t1, "origin is the client's transmit time");
    assert_eq!((p.receive, p.transmit), (t2, t3));
    assert_eq!(p.reference_id, *b"LOCL");
    assert_eq!(p.reference, Timestamp(100 << 32));
    // an NTPv3 client gets a v3 answer
    let mut v3 = req;
    v3.version = 3;
    assert_eq!(
        Packet::decode(&answer(&v3.encode(), &lab_clock(), t2, t3).unwrap())
            .unwrap()
            .version,
        3
    );
    // a server's reply, a symmetric peer, version 0 or 5, a short packet: no answer
    for (mode, version) in [(MODE_SERVER, 4), (1, 4), (MODE_CLIENT, 0), (MODE_CLIENT, 5)] {
        let p = Packet {
            mode,
            version,
            ..req
        };
        assert_eq!(
            answer(&p.encode(), &lab_clock(), t2, t3),
            None,
            "{mode} {version}"
        );
    }
    assert_eq!(answer(&[0x23; 20], &lab_clock(), t2, t3), None);
}

fn secs(s: f64) -> Timestamp {
    Timestamp((s * 4_294_967_296.0) as u64)
}

#[test]
fn offset_and_delay_follow_rfc_5905() {
    // T1 = 10, T2 = 12, T3 = 13, T4 = 15: the clocks agree, 4 s on the wire
    let reply = |t1, t2, t3| answer(&Packet::request(t1).encode(), &lab_clock(), t2, t3).unwrap();
    let s = sample(
        secs(10.0),
        &reply(secs(10.0), secs(12.0), secs(13.0)),
        secs(15.0),
    )
    .unwrap();
    assert_eq!((s.offset_ns, s.delay_ns), (0, 4_000_000_000));
    // the client is 100 s behind, 0.9 s round trip of which the server held 0.1 s
    let s = sample(
        secs(1.0),
        &reply(secs(1.0), secs(101.5), secs(101.6)),
        secs(2.0),
    )
    .unwrap();
    assert!(
        (s.offset_ns - 100_050_000_000).abs() < 10,
        "{}",
        s.offset_ns
    );
    assert!((s.delay_ns - 900_000_000).abs() < 10, "{}", s.delay_ns);
    assert_eq!((s.stratum, s.reference_id), (1, *b"LOCL"));
    // a client 25 years behind (the lab's skewed RTC) against 2026
    let t1 = Timestamp::from_unix(978_307_200, 0);
    let t2 = Timestamp::from_unix(1_767_225_600, 1_000_000);
    let t4 = Timestamp::from_unix(978_307_200, 2_000_000);
    let s = sample(t1, &reply(t1, t2, t2), t4).unwrap();
    assert_eq!(s.offset_ns, 788_918_400_000_000_000);
    assert_eq!(s.delay_ns, 2_000_000);
    assert!(s.max_error_ns() >= s.delay_ns / 2);
}

#[test]
fn replies_a_client_must_refuse() {
    let t1 = Timestamp(1000 << 32);
    let good = Packet::decode(
        &answer(
            &Packet::request(t1).encode(),
            &lab_clock(),
            Timestamp(1001 << 32),
            Timestamp(1001 << 32),
        )
        .unwrap(),
    )
    .unwrap();
    let t4 = Timestamp(1002 << 32);
    let judge = |p: Packet| sample(t1, &p.encode(), t4);
    assert!(judge(good).is_ok());
    assert_eq!(
        judge(Packet {
            origin: Timestamp(999),
            ..good
        }),
        Err(NtpError::Bogus)
    );
    assert_eq!(
        judge(Packet { mode: 3, ..good }),
        Err(NtpError::NotServer { mode: 3 })
    );
    assert_eq!(
        judge(Packet { version: 2, ..good }),
        Err(NtpError::Version { version: 2 })
    );
    assert_eq!(
        judge(Packet {
            stratum: 0,
            reference_id: *b"RATE",
            ..good
        }),
        Err(NtpError::KissOfDeath {
            code: "RATE".into()
        })
    );
    assert!(matches!(
        judge(Packet { leap: 3, ..good }),
        Err(NtpError::Unsynchronised { leap: 3, .. })
    ));
    assert!(matches!(
        judge(Packet {
            stratum: 16,
            ..good
        }),
        Err(NtpError::Unsynchronised { stratum: 16, .. })
    ));
    assert_eq!(
        judge(Packet {
            transmit: Timestamp::ZERO,
            ..good
        }),
        Err(NtpError::NoTransmit)
    );
    assert_eq!(
        sample(t1, &[0x24; 10], t4),
        Err(NtpError::Short { len: 10 })
    );
}

#[test]
fn answered_leap_and_precision_pass_through() {
    let clock = ServerClock {
        leap: 1,
        precision: -6,
        ..lab_clock()
    };
    let t = Timestamp(5 << 32);
    let p = Packet::decode(&answer(&Packet::request(t).encode(), &clock, t, t).unwrap()).unwrap();
    assert_eq!((p.leap, p.precision), (1, -6));
    assert_eq!(
        answer(&Packet::request(t).encode(), &clock, t, t).map(|b| b[3]),
        Some(0xfa)
    );
}
