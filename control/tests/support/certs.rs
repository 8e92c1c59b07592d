//! Certificates for the TLS tests, made with rcgen per test run: a CA, a
//! server certificate for 127.0.0.1 and localhost, a client certificate,
//! and an unrelated second CA with a client certificate of its own (the
//! "wrong CA" cases). PEM files in a temp dir removed when dropped.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate and key, to sign with.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) with
    /// the given uses; its PEM and its key's.
    fn leaf(
        &self,
        cn: &str,
        names: &[&str],
        uses: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = uses;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The PEM files of one test.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes every file.
    pub fn new() -> Pki {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::Builder::new()
            .prefix("twill-tls-")
            .tempdir()
            .unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = Ca::new("twill test CA");
        let other = Ca::new("another CA");
        write("ca.pem", &ca.cert.pem());
        write("other-ca.pem", &other.cert.pem());
        // etcd's gateway dials etcd itself with the server certificate as
        // its client certificate: the server one is good for both.
        let (c, k) = ca.leaf(
            "server",
            &["127.0.0.1", "localhost"],
            vec![ServerAuth, ClientAuth],
        );
        write("server.pem", &c);
        write("server-key.pem", &k);
        let (c, k) = ca.leaf("node-1", &[], vec![ClientAuth]);
        write("client.pem", &c);
        write("client-key.pem", &k);
        let (c, k) = other.leaf("intruder", &[], vec![ClientAuth]);
        write("other-client.pem", &c);
        write("other-client-key.pem", &k);
        Pki { dir }
    }

    /// A file of this set: `ca.pem`, `other-ca.pem`, `server.pem`,
    /// `server-key.pem`, `client.pem`, `client-key.pem`,
    /// `other-client.pem`, `other-client-key.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The client files: `ca` trusted, and the client certificate
    /// `client` (`"client"` or `"other-client"`) if given.
    pub fn client(&self, ca: &str, client: Option<&str>) -> control::ClientTls {
        control::ClientTls {
            ca_file: Some(self.path(ca)),
            cert_file: client.map(|c| self.path(&format!("{c}.pem"))),
            key_file: client.map(|c| self.path(&format!("{c}-key.pem"))),
        }
    }

    /// The server files, with `client.pem`'s CA required of clients when
    /// `client_certs`.
    pub fn server(&self, client_certs: bool) -> control::ServerTls {
        control::ServerTls {
            cert_file: self.path("server.pem"),
            key_file: self.path("server-key.pem"),
            client_ca_file: client_certs.then(|| self.path("ca.pem")),
        }
    }
}
