use std::fs;

use futures::StreamExt;
use serde_json::json;

use super::*;
use crate::objects::Kind;

const POLL: Duration = Duration::from_millis(5);

/// Writes as editors and `put` do (a hidden file, then rename), so that a
/// poll never reads a half-written file.
fn write(path: impl AsRef<std::path::Path>, text: impl AsRef<[u8]>) {
    let path = path.as_ref();
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn svc_yaml(name: &str, port: u16) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: 10.96.0.{port}\n  ports:\n  - port: {port}\n")
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Service,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn svc_json(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": port}]}})
}

fn names(list: &ObjectList) -> Vec<String> {
    list.objects.iter().map(|o| o.key.to_string()).collect()
}

async fn next(w: &mut ObjectWatch) -> ObjectEvent {
    // A guard against a hang, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("no event")
        .expect("stream ended")
        .expect("watch error")
}

fn describe_event(e: &ObjectEvent) -> String {
    match &e.change {
        ObjectChange::Put { object } => format!("{} put {}", e.revision, object.key),
        ObjectChange::Deleted { key } => format!("{} deleted {key}", e.revision),
    }
}

#[tokio::test]
async fn list_reads_manifests_in_name_order_skipping_hidden_temp_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d.join("b.yaml"), svc_yaml("b", 2));
    write(d.join("a.json"), svc_json("a", 1).to_string());
    write(d.join("c.yml"), svc_yaml("c", 3));
    write(d.join(".d.yaml"), svc_yaml("d", 4));
    write(d.join("e.yaml~"), svc_yaml("e", 5));
    write(d.join("f.txt"), svc_yaml("f", 6));
    fs::create_dir(d.join("g.yaml")).unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    write(d.join("sub/h.yaml"), svc_yaml("h", 7));

    let store = DirStore::new(d, POLL);
    let list = store.list().await.unwrap();
    assert_eq!(list.revision, 1);
    assert_eq!(
        names(&list),
        [
            "Service default/a",
            "Service default/b",
            "Service default/c"
        ]
    );
    assert!(list.objects.iter().all(|o| o.revision == 1));
    // Unchanged: the revision stays.
    assert_eq!(store.list().await.unwrap().revision, 1);
}

#[tokio::test]
async fn the_same_object_in_two_files_the_later_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("10-web.yaml"), svc_yaml("web", 1));
    write(dir.path().join("20-web.yaml"), svc_yaml("web", 2));
    let list = DirStore::new(dir.path(), POLL).list().await.unwrap();
    assert_eq!(list.objects.len(), 1);
    assert_eq!(list.objects[0].object["spec"]["ports"][0]["port"], 2);
}

#[tokio::test]
async fn a_broken_file_keeps_its_last_good_version_and_a_new_one_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d.join("web.yaml"), svc_yaml("web", 1));
    write(d.join("bad.yaml"), "kind: Service\nmetadata: {name: x\n");
    let store = DirStore::new(d, POLL);
    assert_eq!(names(&store.list().await.unwrap()), ["Service default/web"]);

    // A half-saved edit: the running Service stays as it was.
    write(
        d.join("web.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 0}]}\n",
    );
    let list = store.list().await.unwrap();
    assert_eq!(list.revision, 1);
    assert_eq!(list.objects[0].object["spec"]["ports"][0]["port"], 1);

    // Fixed: the new version.
    write(d.join("web.yaml"), svc_yaml("web", 9));
    let list = store.list().await.unwrap();
    assert_eq!(list.revision, 2);
    assert_eq!(list.objects[0].object["spec"]["ports"][0]["port"], 9);
    assert_eq!(list.objects[0].revision, 2);

    // Removed: its objects go, even though it was broken once.
    fs::remove_file(d.join("web.yaml")).unwrap();
    let list = store.list().await.unwrap();
    assert_eq!((list.revision, list.objects.len()), (3, 0));
}

#[tokio::test]
async fn watch_yields_puts_and_deletes_from_polls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d.join("a.yaml"), svc_yaml("a", 1));
    let store = DirStore::new(d, POLL);
    let list = store.list().await.unwrap();
    let mut w = store.watch(list.revision).await.unwrap();

    write(d.join("b.yaml"), svc_yaml("b", 2));
    let ev = next(&mut w).await;
    assert_eq!(describe_event(&ev), "2 put Service default/b");
    if let ObjectChange::Put { object } = &ev.change {
        assert_eq!(object.revision, 2);
        assert_eq!(object.object["metadata"]["name"], "b");
    }

    write(d.join("a.yaml"), svc_yaml("a", 7));
    assert_eq!(
        describe_event(&next(&mut w).await),
        "3 put Service default/a"
    );

    fs::remove_file(d.join("b.yaml")).unwrap();
    assert_eq!(
        describe_event(&next(&mut w).await),
        "4 deleted Service default/b"
    );

    // Two changes seen by one poll share a revision (written as one file).
    write(
        d.join("c.yaml"),
        format!("{}---\n{}", svc_yaml("c", 3), svc_yaml("d", 4)),
    );
    let (e1, e2) = (next(&mut w).await, next(&mut w).await);
    assert_eq!(
        [describe_event(&e1), describe_event(&e2)],
        ["5 put Service default/c", "5 put Service default/d"]
    );
}

#[tokio::test]
async fn a_list_between_polls_does_not_hide_changes_from_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = DirStore::new(d, POLL);
    let rev = store.list().await.unwrap().revision;
    let mut w1 = store.watch(rev).await.unwrap();
    write(d.join("a.yaml"), svc_yaml("a", 1));
    // This list takes the change first; the watchers still get it.
    assert_eq!(store.list().await.unwrap().revision, 2);
    let mut w2 = store.watch(rev).await.unwrap();
    assert_eq!(
        describe_event(&next(&mut w1).await),
        "2 put Service default/a"
    );
    assert_eq!(
        describe_event(&next(&mut w2).await),
        "2 put Service default/a"
    );
}

#[tokio::test]
async fn watch_from_a_revision_the_store_cannot_diff_from_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path(), POLL);
    for after in [0, 2, 99] {
        match store.watch(after).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (after, 1))
            }
            other => panic!("{after}: {:?}", other.map(|_| ())),
        }
    }
    assert!(store.watch(1).await.is_ok());
}

#[tokio::test]
async fn put_writes_a_json_file_atomically_and_delete_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = DirStore::new(d, POLL);
    let rev = store.put(key("web"), svc_json("web", 80)).await.unwrap();
    assert_eq!(rev, 2);
    let file = d.join("services.default.web.json");
    let stored: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored, svc_json("web", 80));
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(d).unwrap().count(), 1);
    // The same value again changes nothing.
    assert_eq!(store.put(key("web"), svc_json("web", 80)).await.unwrap(), 2);
    assert_eq!(store.put(key("web"), svc_json("web", 81)).await.unwrap(), 3);

    assert!(store.delete(key("web")).await.unwrap());
    assert!(!file.exists());
    assert!(!store.delete(key("web")).await.unwrap());
    let list = store.list().await.unwrap();
    assert_eq!((list.revision, list.objects.len()), (4, 0));
}

#[tokio::test]
async fn put_and_delete_refuse_objects_defined_in_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d.join("web.yaml"), svc_yaml("web", 1));
    let store = DirStore::new(d, POLL);
    let e = store.delete(key("web")).await.unwrap_err().to_string();
    assert!(
        e.contains("Service default/web") && e.contains("web.yaml"),
        "{e}"
    );
    let e = store
        .put(key("web"), svc_json("web", 2))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("web.yaml"), "{e}");
    assert!(d.join("web.yaml").exists());
    assert!(!d.join("services.default.web.json").exists());

    // Also when the store's own file wins by name: deleting it would
    // bring the other definition back.
    write(
        d.join("services.default.web.json"),
        svc_json("web", 3).to_string(),
    );
    write(d.join("a-web.yaml"), svc_yaml("web", 4));
    fs::remove_file(d.join("web.yaml")).unwrap();
    let e = store.delete(key("web")).await.unwrap_err().to_string();
    assert!(e.contains("a-web.yaml"), "{e}");
}

#[tokio::test]
async fn put_refuses_invalid_objects_and_wrong_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path(), POLL);
    let e = store
        .put(key("web"), svc_json("web", 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.ports[0].port: 0 is not a port"), "{e}");
    let e = store
        .put(key("api"), svc_json("web", 80))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("the object is Service default/web"), "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_missing_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path().join("nope"), POLL);
    assert!(matches!(
        store.list().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[test]
fn manifest_names() {
    for (name, ok) in [
        ("a.yaml", true),
        ("a.yml", true),
        ("a.json", true),
        (".a.yaml", false),
        ("#a.yaml#", false),
        ("a.yaml~", false),
        ("a.yaml.swp", false),
        (".yaml", false),
        ("a.txt", false),
    ] {
        assert_eq!(is_manifest(name), ok, "{name}");
    }
}

#[tokio::test]
async fn a_namespace_is_stored_in_a_file_without_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = DirStore::new(d, POLL);
    let key = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: "prod".into(),
    };
    assert_eq!(DirStore::file_name(&key), "namespaces.prod.json");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}});
    let r = store.put(key.clone(), ns.clone()).await.unwrap();
    let text = fs::read_to_string(d.join("namespaces.prod.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), ns);
    let list = store.list().await.unwrap();
    assert_eq!(names(&list), ["Namespace prod"]);
    assert_eq!((&list.objects[0].key, list.objects[0].revision), (&key, r));
    // A namespaced key for it is refused.
    let wrong = ObjectKey {
        namespace: "default".into(),
        ..key.clone()
    };
    let e = store.put(wrong, ns).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidObject(_)), "{e}");
    assert!(store.delete(key.clone()).await.unwrap());
    assert!(!d.join("namespaces.prod.json").exists());
    assert!(!store.delete(key).await.unwrap());
}

#[tokio::test]
async fn hand_written_policy_manifests_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d.join("policy.yaml"),
        include_str!("fixtures/policy-list.yaml"),
    );
    let store = DirStore::new(d, POLL);
    let list = store.list().await.unwrap();
    assert_eq!(
        names(&list),
        [
            "Service prod/db",
            "Pod prod/db-0",
            "Namespace prod",
            "NetworkPolicy prod/db-from-frontend"
        ]
    );
}
