//! `twill service`: write Services and EndpointSlices into the object store
//! every node follows, delete them, and show what the local agent
//! balances.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use control::objects::{Kind, ObjectKey, ObjectStore};

use twill::api::{self, Request, DEFAULT_SOCKET};

/// `twill service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Store the Services and EndpointSlices of a manifest (JSON or YAML,
    /// several documents, or a `kind: List`, as `kubectl get -o json|yaml`
    /// prints them). Other kinds in the file are skipped and named. Every
    /// object is checked before any is written.
    Apply {
        /// The manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a Service and the EndpointSlices labelled for it
    /// (`kubernetes.io/service-name`), or every object a manifest names.
    Delete {
        /// The Service's name.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// The Service's namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Delete the objects this manifest names instead.
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the service ports the local agent balances: frontends and the
    /// backends new connections go to.
    List {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which object store to write to.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// A node's configuration: its controller, its etcd or its
    /// `objects_dir`.
    #[arg(long, short, conflicts_with_all = ["controller", "etcd", "dir", "cafile", "certfile", "keyfile"])]
    config: Option<PathBuf>,
    /// A controller's URL (with --token-file).
    #[arg(long, requires = "token_file")]
    controller: Option<String>,
    /// The controller's bearer token file.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// A directory of manifests (a static node's `objects_dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// With an https:// --controller or --etcd: the CA that signed its
    /// certificate (the system's roots are not used).
    #[arg(long, conflicts_with = "dir")]
    cafile: Option<PathBuf>,
    /// A client certificate (PEM) for a controller or etcd that asks for
    /// one; with --keyfile.
    #[arg(long, requires = "keyfile", conflicts_with = "dir")]
    certfile: Option<PathBuf>,
    /// The private key of --certfile (PEM).
    #[arg(long, requires = "certfile", conflicts_with = "dir")]
    keyfile: Option<PathBuf>,
}

impl StoreArgs {
    async fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        use twill::agent::lease_store::{open_objects, ObjectSource as Source};
        let tls = control::ClientTls {
            ca_file: self.cafile.clone(),
            cert_file: self.certfile.clone(),
            key_file: self.keyfile.clone(),
        };
        let source = if let Some(path) = &self.config {
            let cfg = control::NodeConfig::load(path)?;
            match (cfg.control, cfg.objects_dir) {
                (Some(plane), _) => Source::Plane(plane),
                (None, Some(dir)) => Source::Dir(dir),
                (None, None) => bail!(
                    "{} names no control plane and no objects_dir: there is nowhere to store objects",
                    path.display()
                ),
            }
        } else if let Some(url) = &self.controller {
            let token_file = self
                .token_file
                .clone()
                .context("--controller needs --token-file")?;
            Source::Plane(control::ControlPlane::Controller {
                url: url.clone(),
                token_file,
                tls,
            })
        } else if let Some(endpoints) = &self.etcd {
            Source::Plane(control::ControlPlane::Etcd {
                endpoints: endpoints.clone(),
                prefix: control::store::DEFAULT_ETCD_PREFIX.into(),
                tls,
            })
        } else if let Some(dir) = &self.dir {
            Source::Dir(dir.clone())
        } else {
            bail!("say where the objects are stored: --config NODE_CONFIG, --controller URL --token-file F, --etcd URLS or --dir DIR");
        };
        Ok(open_objects(&source).await?)
    }
}

fn read_manifest(file: &str) -> Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the manifest from standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

fn manifest(file: &str) -> Result<control::k8s::Manifests> {
    let text = read_manifest(file)?;
    let m = control::k8s::parse_manifests(&text).with_context(|| format!("in {file}"))?;
    for s in &m.skipped {
        eprintln!("skipped {s}: not a kind twill stores");
    }
    for o in &m.objects {
        if let control::k8s::Object::Service(s) = o {
            let spec = s.spec();
            let external_name = spec.service_type == control::k8s::ServiceType::ExternalName;
            if spec.cluster_ip == control::k8s::ClusterIp::Unset && !external_name {
                eprintln!(
                    "warning: {} has no clusterIP; twill allocates none (that is the API \
                     server's job), so it gets no load balancing until one is set",
                    o.key()
                );
            }
        }
    }
    Ok(m)
}

/// Runs `twill service …`.
pub fn run(cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::List { socket, json } => {
            let v = api::call(&socket, &Request::Services)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", twill::report::services_table(&v));
            }
            Ok(())
        }
        ServiceCmd::Apply { file, store } => apply(&file, &store),
        ServiceCmd::Delete {
            name,
            namespace,
            file,
            store,
        } => {
            let file_keys = file
                .map(|f| {
                    manifest(&f).map(|m| m.objects.iter().map(|o| o.key()).collect::<Vec<_>>())
                })
                .transpose()?;
            block_on(async {
                let store = store.open().await?;
                let keys = match (file_keys, name) {
                    (Some(keys), _) => keys,
                    (None, Some(name)) => service_and_slices(&*store, &namespace, &name).await?,
                    (None, None) => bail!("say what to delete: NAME or -f FILE"),
                };
                delete_keys(&*store, keys).await
            })
        }
    }
}

/// `twill apply -f FILE`: stores every object of a manifest that twill
/// reads (Services, EndpointSlices, Pods, Namespaces, NetworkPolicies),
/// each checked before any is written.
pub fn apply(file: &str, store: &StoreArgs) -> Result<()> {
    let m = manifest(file)?;
    if m.objects.is_empty() {
        bail!("{file} holds no object of a kind twill stores");
    }
    block_on(async {
        let store = store.open().await?;
        for o in m.objects {
            let key = o.key();
            let rev = store
                .put(key.clone(), o.value().clone())
                .await
                .with_context(|| format!("storing {key}"))?;
            println!("{key} applied (revision {rev})");
        }
        Ok(())
    })
}

/// `twill delete -f FILE` or `twill delete KIND NAME [-n NS]`.
pub fn delete(
    file: Option<&str>,
    kind: Option<&str>,
    name: Option<&str>,
    namespace: &str,
    store: &StoreArgs,
) -> Result<()> {
    let keys = match (file, kind, name) {
        (Some(f), None, None) => manifest(f)?.objects.iter().map(|o| o.key()).collect(),
        (None, Some(k), Some(name)) => {
            let kind = kind_named(k)?;
            let namespace = if kind.namespaced() {
                namespace.to_owned()
            } else {
                String::new()
            };
            vec![ObjectKey {
                kind,
                namespace,
                name: name.to_owned(),
            }]
        }
        _ => bail!("say what to delete: -f FILE, or KIND NAME"),
    };
    block_on(async {
        let store = store.open().await?;
        delete_keys(&*store, keys).await
    })
}

async fn delete_keys(store: &dyn ObjectStore, keys: Vec<ObjectKey>) -> Result<()> {
    for key in keys {
        let existed = store
            .delete(key.clone())
            .await
            .with_context(|| format!("deleting {key}"))?;
        println!("{key} {}", if existed { "deleted" } else { "not found" });
    }
    Ok(())
}

/// A kind as kubectl names it: `networkpolicy`, `networkpolicies`,
/// `netpol`, `NetworkPolicy`, …
fn kind_named(s: &str) -> Result<Kind> {
    let l = s.to_ascii_lowercase();
    let short = match l.as_str() {
        "svc" => Some(Kind::Service),
        "po" => Some(Kind::Pod),
        "ns" => Some(Kind::Namespace),
        "netpol" => Some(Kind::NetworkPolicy),
        _ => None,
    };
    short
        .or_else(|| {
            Kind::ALL
                .into_iter()
                .find(|k| k.resource() == l || k.name().to_ascii_lowercase() == l)
        })
        .with_context(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.resource()).collect();
            format!("unknown kind {s:?}: one of {}", names.join(", "))
        })
}

/// The Service `namespace/name` and the EndpointSlices labelled for it.
async fn service_and_slices(
    store: &dyn ObjectStore,
    namespace: &str,
    name: &str,
) -> Result<Vec<ObjectKey>> {
    let list = store.list().await.context("listing the stored objects")?;
    let mut keys = vec![ObjectKey {
        kind: Kind::Service,
        namespace: namespace.into(),
        name: name.into(),
    }];
    keys.extend(list.objects.into_iter().filter_map(|o| {
        let labelled =
            o.object["metadata"]["labels"]["kubernetes.io/service-name"].as_str() == Some(name);
        (o.key.kind == Kind::EndpointSlice && o.key.namespace == namespace && labelled)
            .then_some(o.key)
    }));
    Ok(keys)
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?
        .block_on(f)
}
