use super::*;

fn args(s: &[&str]) -> Result<Args, String> {
    parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
}

#[test]
fn arguments() {
    let a = args(&["--db", "host=x", "--key", "k.pem", "v1.a", "v1.b"]).unwrap();
    assert_eq!((a.db.as_str(), a.key.as_str()), ("host=x", "k.pem"));
    assert_eq!(a.tokens, ["v1.a", "v1.b"]);
    assert!(args(&["--db", "host=x", "--key", "k", "-"]).unwrap().stdin);
    let a = args(&[
        "--db",
        "x",
        "--key",
        "k",
        "--csv",
        "f.csv",
        "--column",
        "masked_ip",
    ])
    .unwrap();
    assert_eq!(a.csv, Some(("f.csv".into(), "masked_ip".into())));
    for bad in [
        &["--key", "k", "v1.a"][..],
        &["--db", "x", "--key", "k"],
        &["--db", "x", "--key", "k", "-", "v1.a"],
        &["--db", "x", "--key", "k", "--csv", "f"],
        &["--db", "x", "--key", "k", "--frobnicate"],
        &["--db"],
    ] {
        assert!(args(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tokens_are_deduplicated_in_order() {
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(distinct(t(&["b", "a", "b", "c", "a"])), t(&["b", "a", "c"]));
}

#[test]
fn a_csv_column() {
    let dir = std::env::temp_dir().join(format!("unmask-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("rows.csv");
    std::fs::write(&f, "user_id,masked_ip\nu1,v1.aaa\nu2,\"v1.bbb\"\nu3,\n").unwrap();
    let f = f.to_string_lossy().to_string();
    assert_eq!(
        tokens_from_csv(&f, "masked_ip").unwrap(),
        ["v1.aaa", "v1.bbb"]
    );
    assert!(tokens_from_csv(&f, "nope")
        .unwrap_err()
        .contains("no column nope"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recovery_with_the_right_key_the_wrong_key_and_tampering() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let other = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let private = mask::parse_private_key(&pem, None).unwrap();
    let dk = mask::new_key();
    let wrapped = mask::wrap(&key.to_public_key(), &dk);
    let sealed = mask::seal(&dk, "v1.tok", b"199.172.111.135");
    let s = Sealed {
        outcome: "exported".into(),
        sealed: Some(sealed.clone()),
        wrapped_key: Some(wrapped.clone()),
    };
    let mut cache = HashMap::new();
    assert_eq!(
        recover(&private, &mut cache, "v1.tok", &s),
        (Some("199.172.111.135".into()), "ok".into())
    );
    assert_eq!(cache.len(), 1, "the data key is unwrapped once");
    assert_eq!(
        recover(&other, &mut HashMap::new(), "v1.tok", &s).1,
        "wrong_key"
    );
    assert_eq!(
        recover(&private, &mut cache, "v1.other", &s).1,
        "corrupt",
        "a sealed value moved to another token does not open"
    );
    let erased = Sealed {
        outcome: "erased".into(),
        sealed: None,
        wrapped_key: None,
    };
    assert_eq!(
        recover(&private, &mut cache, "v1.tok", &erased),
        (None, "erased".into())
    );
}
