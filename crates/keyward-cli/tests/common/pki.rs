//! A test PKI made with the openssl CLI: a CA and a server certificate for 127.0.0.1 signed
//! by it (the escrow server's TLS tests, the webhook's and the identity provider's `ca_file`).

/// A CA and a server certificate for 127.0.0.1 signed by it, made by stock openssl in `dir`:
/// (ca.pem, server.pem, server.key).
pub fn make_pki(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let ok = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            super::stderr(&out)
        );
    };
    let s = |p: std::path::PathBuf| p.display().to_string();
    // `openssl req` with a new P-256 key, unencrypted, plus `more`.
    let req = |more: &[&str]| {
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        args.extend_from_slice(more);
        ok(&args);
    };
    req(&[
        "-x509",
        "-keyout",
        &s(p("ca.key")),
        "-out",
        &s(p("ca.pem")),
        "-days",
        "2",
        "-subj",
        "/CN=keyward test CA",
    ]);
    req(&[
        "-keyout",
        &s(p("server.key")),
        "-out",
        &s(p("server.csr")),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    ok(&[
        "x509",
        "-req",
        "-in",
        &s(p("server.csr")),
        "-CA",
        &s(p("ca.pem")),
        "-CAkey",
        &s(p("ca.key")),
        "-CAcreateserial",
        "-out",
        &s(p("server.pem")),
        "-days",
        "2",
        "-extfile",
        &s(p("ext")),
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}
