//! Which certificate authorities the server's own HTTPS clients trust: Mozilla's roots by
//! default, or only the certificates in a table's `ca_file` (an in-house identity provider or
//! webhook receiver behind a company CA). Read once at start; a file that cannot be read or
//! holds no certificate stops the server with the table and the path named.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

/// The roots for `table`'s client (`table` names it in errors, e.g. `[notify]`).
pub fn roots(table: &str, ca_file: Option<&Path>) -> Result<RootCerts, String> {
    let Some(path) = ca_file else {
        return Ok(RootCerts::WebPki);
    };
    let problem = |why: String| format!("{table} ca_file {}: {why}", path.display());
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<Certificate<'static>>, _>>()
        .map_err(|e| problem(e.to_string()))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".to_owned()));
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::roots;

    #[test]
    fn no_file_means_mozillas_roots_and_a_file_without_a_certificate_is_refused() {
        assert!(matches!(
            roots("[notify]", None),
            Ok(ureq::tls::RootCerts::WebPki)
        ));
        let dir = std::env::temp_dir().join(format!("keyward-ca-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = roots("[oidc]", Some(&empty)).unwrap_err();
        assert!(
            e.starts_with("[oidc] ca_file ") && e.ends_with("holds no PEM certificate"),
            "{e}"
        );
        let e = roots("[notify]", Some(&dir.join("absent.pem"))).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
