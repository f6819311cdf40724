//! The deployment files under deploy/ against the code they deploy: every configuration they
//! carry loads through the real loader, every variable they set is one invite-sync reads,
//! the probes hit routes the server answers on the port it listens on, the grace periods
//! outlast the shutdown timeout, and the systemd credential is the file the config reads.
//! Schema validity (Kubernetes, systemd, Dockerfile) is `scripts/check-deploy`'s part.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use invite_sync::clerk::sim::SimOptions;
use invite_sync::config::{
    env_var_name, LogFormat, Settings, CLERK_SECRET_KEY_VAR, CREDENTIALS_DIRECTORY_VAR,
    DATABASE_URL_VAR, ENV_PREFIX,
};
use reqwest::StatusCode;
use serde_yaml::Value;
use sqlx::Executor;

use crate::common::{
    bare_command, env, free_port, read, repo_path, yaml, Harness, Proc, Scratch, Service, TestDb,
};

/// A database URL that loads; nothing here connects with it.
const DUMMY_DATABASE_URL: &str =
    "postgres://invite_sync:secret@db.example.internal:5432/invite_sync";
/// The variable that names the config file (clap's `--config`); not a configuration key.
const CONFIG_FILE_VAR: &str = "INVITE_SYNC_CONFIG";
/// Where systemd puts a unit's credentials.
const CREDENTIALS_DIRECTORY: &str = "/run/credentials/invite-sync.service";

const KUBE_BASE: &str = "deploy/kubernetes/base";
const KUBE_CRONJOB: &str = "deploy/kubernetes/overlays/cronjob";
const SYSTEMD: &str = "deploy/systemd";

// ---------------------------------------------------------------------------
// Reading the files

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value:?}"))
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {value:?}"))
}

fn seq(value: &Value) -> &Vec<Value> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {value:?}"))
}

fn strings(value: &Value) -> Vec<String> {
    seq(value).iter().map(|v| text(v).to_owned()).collect()
}

/// The entry of a list of objects whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    seq(list)
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name} in {list:?}"))
}

fn load(file: &str, env: &HashMap<String, String>) -> Settings {
    Settings::load(Some(&repo_path(file)), env)
        .unwrap_or_else(|e| panic!("{file} does not load with {:?}:\n{e}", env.keys()))
}

fn deployment() -> Value {
    yaml(&format!("{KUBE_BASE}/deployment.yaml"))
}

fn cronjob() -> Value {
    yaml(&format!("{KUBE_CRONJOB}/cronjob.yaml"))
}

/// The pod spec of the Deployment and of the CronJob, with what runs it.
fn pod_specs() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Deployment",
            deployment()["spec"]["template"]["spec"].clone(),
        ),
        (
            "CronJob",
            cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone(),
        ),
    ]
}

/// The one container of a pod spec.
fn container(pod: &Value) -> &Value {
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// The base's ConfigMap: the generator's name and the file it holds.
fn config_map() -> (String, String) {
    let kustomization = yaml(&format!("{KUBE_BASE}/kustomization.yaml"));
    let generators = seq(&kustomization["configMapGenerator"]);
    assert_eq!(generators.len(), 1, "one ConfigMap");
    let files = strings(&generators[0]["files"]);
    assert_eq!(files, ["config.toml"], "the ConfigMap holds config.toml");
    (
        text(&generators[0]["name"]).to_owned(),
        format!("{KUBE_BASE}/config.toml"),
    )
}

fn kube_settings() -> Settings {
    let (_, file) = config_map();
    load(&file, &env(&[(DATABASE_URL_VAR, DUMMY_DATABASE_URL)]))
}

/// A systemd unit as section → key → values (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn unit(name: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in read(&format!("{SYSTEMD}/{name}")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: not a key=value line: {line}"));
        unit.entry(section.clone())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    unit
}

/// The single value of `section.key`.
fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("[{section}] has no {key}="));
    assert_eq!(values.len(), 1, "[{section}] {key}= is set more than once");
    &values[0]
}

/// A systemd time span as written in the units: `45`, `45s`, `15min`.
fn timespan(value: &str) -> Duration {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("{value} is not a time span this test reads"));
    match &value[digits.len()..] {
        "" | "s" => Duration::from_secs(number),
        "min" => Duration::from_secs(number * 60),
        unit => panic!("{value}: unit {unit} is not one this test reads"),
    }
}

/// The path of `/etc/...` as the repository ships it under deploy/systemd.
fn shipped(installed: &str) -> String {
    let relative = installed
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("{installed} is not absolute"));
    format!("{SYSTEMD}/{relative}")
}

fn systemd_settings() -> Settings {
    let service = unit("invite-sync.service");
    let exec = one(&service, "Service", "ExecStart");
    let config = config_argument(exec);
    load(
        &shipped(&config),
        &env(&[
            (DATABASE_URL_VAR, DUMMY_DATABASE_URL),
            (CREDENTIALS_DIRECTORY_VAR, CREDENTIALS_DIRECTORY),
        ]),
    )
}

/// The file after `--config` in a command line.
fn config_argument(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--config")
        .unwrap_or_else(|| panic!("{command} has no --config"));
    words[at + 1].to_owned()
}

// ---------------------------------------------------------------------------
// Kubernetes

#[test]
fn the_deployment_runs_two_locked_down_replicas() {
    let deployment = deployment();
    assert_eq!(int(&deployment["spec"]["replicas"]), 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(int(&pod_security["runAsUser"]), 65532);
    assert_eq!(
        text(&pod_security["seccompProfile"]["type"]),
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));

    let container = container(pod);
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(int(&security["runAsUser"]), 65532);
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(text(&security["seccompProfile"]["type"]), "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].as_str().is_some(),
                "resources.{kind}.{resource} is not set"
            );
        }
    }
    assert_eq!(
        strings(&container["args"]),
        ["--config", "/etc/invite-sync/config.toml", "run"]
    );
}

#[test]
fn the_configmap_config_loads_and_fits_the_pods() {
    let (config_map_name, _) = config_map();
    let settings = kube_settings();
    assert_eq!(settings.log.format, LogFormat::Json);
    assert!(
        settings.http.listen.ip().is_unspecified(),
        "http.listen must take connections from outside the pod, got {}",
        settings.http.listen
    );

    for (kind, pod) in pod_specs() {
        let container = container(&pod);
        let mounts = &container["volumeMounts"];

        // --config names config.toml inside the ConfigMap's mount.
        let config_volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["configMap"]["name"].as_str() == Some(&config_map_name))
            .unwrap_or_else(|| panic!("{kind} mounts no ConfigMap {config_map_name}"));
        let config_dir = text(&named(mounts, text(&config_volume["name"]))["mountPath"]);
        let args = strings(&container["args"]);
        assert_eq!(
            config_argument(&args.join(" ")),
            format!("{config_dir}/config.toml"),
            "{kind}: --config is not the mounted config.toml"
        );

        // clerk.secret_key_file is the Secret's clerk-secret-key, as mounted.
        let secret_volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["secret"]["secretName"].as_str() == Some("invite-sync"))
            .unwrap_or_else(|| panic!("{kind} mounts no Secret invite-sync"));
        let item = seq(&secret_volume["secret"]["items"])
            .iter()
            .find(|i| i["key"].as_str() == Some("clerk-secret-key"))
            .unwrap_or_else(|| panic!("{kind} mounts no clerk-secret-key"));
        let secret_dir = text(&named(mounts, text(&secret_volume["name"]))["mountPath"]);
        assert_eq!(
            settings.clerk.secret_key_file.as_deref(),
            Some(Path::new(&format!("{secret_dir}/{}", text(&item["path"])))),
            "{kind}: clerk.secret_key_file is not the mounted Secret key"
        );

        // DATABASE_URL from the Secret's database-url.
        let database = named(&container["env"], DATABASE_URL_VAR);
        assert_eq!(
            text(&database["valueFrom"]["secretKeyRef"]["name"]),
            "invite-sync"
        );
        assert_eq!(
            text(&database["valueFrom"]["secretKeyRef"]["key"]),
            "database-url"
        );

        // The kubelet waits out a clean stop before it kills.
        let grace = int(&pod["terminationGracePeriodSeconds"]);
        assert!(
            grace > settings.sync.shutdown_timeout_seconds as i64,
            "{kind}: terminationGracePeriodSeconds {grace} must exceed \
             sync.shutdown_timeout_seconds {}",
            settings.sync.shutdown_timeout_seconds
        );
    }
}

#[test]
fn ports_match_http_listen() {
    let settings = kube_settings();
    let port = i64::from(settings.http.listen.port());
    let admin_listen = settings
        .http
        .admin_listen
        .expect("the probes have a listener of their own");
    assert!(
        admin_listen.ip().is_unspecified(),
        "the kubelet reaches {admin_listen}"
    );
    let admin_port = i64::from(admin_listen.port());
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let http = named(&container(pod)["ports"], "http");
    assert_eq!(int(&http["containerPort"]), port, "the container port");
    let admin = named(&container(pod)["ports"], "admin");
    assert_eq!(int(&admin["containerPort"]), admin_port, "the admin port");
    assert_eq!(
        text(&deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]),
        admin_port.to_string(),
        "Prometheus scrapes the admin listener"
    );

    let service = yaml(&format!("{KUBE_BASE}/service.yaml"));
    let service_port = named(&service["spec"]["ports"], "http");
    assert_eq!(int(&service_port["port"]), port);
    assert_eq!(text(&service_port["targetPort"]), "http");
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "the Service selects the Deployment's pods"
    );

    let policy = yaml(&format!("{KUBE_BASE}/networkpolicy.yaml"));
    let ports = |rules: &Value| -> BTreeSet<(i64, String)> {
        seq(rules)
            .iter()
            .flat_map(|rule| seq(&rule["ports"]).iter())
            .map(|p| (int(&p["port"]), text(&p["protocol"]).to_owned()))
            .collect()
    };
    let tcp = |port: i64| (port, "TCP".to_owned());
    assert_eq!(
        ports(&policy["spec"]["ingress"]),
        BTreeSet::from([tcp(port), tcp(admin_port)])
    );
    assert_eq!(
        ports(&policy["spec"]["egress"]),
        BTreeSet::from([tcp(5432), tcp(443), tcp(53), (53, "UDP".to_owned())])
    );
    // The policy covers the service's pods and the CronJob's.
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .expect("the policy selects by labels");
    for (kind, labels) in [
        (
            "Deployment",
            &deployment["spec"]["template"]["metadata"]["labels"],
        ),
        (
            "CronJob",
            &cronjob()["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        ),
    ] {
        for (key, value) in selector {
            assert_eq!(
                &labels[key], value,
                "the NetworkPolicy does not select the {kind}'s pods"
            );
        }
    }

    let budget = yaml(&format!("{KUBE_BASE}/poddisruptionbudget.yaml"));
    assert_eq!(int(&budget["spec"]["minAvailable"]), 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[tokio::test]
async fn probes_hit_routes_the_server_answers() {
    let deployment = deployment();
    let container = container(&deployment["spec"]["template"]["spec"]).clone();
    let probe_path = |probe: &str| -> String {
        let get = &container[probe]["httpGet"];
        assert_eq!(text(&get["port"]), "admin", "{probe} uses the admin port");
        text(&get["path"]).to_owned()
    };
    assert_eq!(probe_path("livenessProbe"), "/healthz");
    assert_eq!(probe_path("readinessProbe"), "/readyz");
    assert_eq!(probe_path("startupProbe"), "/healthz");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    let metrics_path = text(&annotations["prometheus.io/path"]).to_owned();

    // The real service, on a real socket, with a database that answers. The probes' port
    // serves http.admin_listen: the admin router.
    let h = Harness::serving(&[]).await;
    let service = Service::with_admin(&h).await;

    let get = |path: String| {
        let client = service.client.clone();
        let url = service.admin_url(&path);
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"))
                .status()
        }
    };
    for path in [
        probe_path("livenessProbe"),
        probe_path("readinessProbe"),
        probe_path("startupProbe"),
        metrics_path,
    ] {
        assert_eq!(get(path.clone()).await, StatusCode::OK, "GET {path}");
    }
    // A 200 above means a route, not a catch-all.
    assert_eq!(
        get("/no-such-route".to_owned()).await,
        StatusCode::NOT_FOUND
    );

    service.stop().await.expect("the service stops cleanly");
}

#[test]
fn the_cronjob_overlay_runs_sync_like_the_deployment() {
    let kustomization = yaml(&format!("{KUBE_CRONJOB}/kustomization.yaml"));
    let resources = strings(&kustomization["resources"]);
    assert!(resources.contains(&"../../base".to_owned()));
    assert!(resources.contains(&"cronjob.yaml".to_owned()));
    let deletes_deployment = seq(&kustomization["patches"]).iter().any(|patch| {
        let patch: Value = serde_yaml::from_str(text(&patch["patch"])).expect("a YAML patch");
        patch["$patch"].as_str() == Some("delete")
            && patch["kind"].as_str() == Some("Deployment")
            && patch["metadata"]["name"] == deployment()["metadata"]["name"]
    });
    assert!(deletes_deployment, "the overlay deletes the Deployment");

    let cronjob = cronjob();
    assert_eq!(text(&cronjob["spec"]["schedule"]), "*/5 * * * *");
    assert_eq!(text(&cronjob["spec"]["concurrencyPolicy"]), "Forbid");
    let [(_, service_pod), (_, job_pod)] = <[_; 2]>::try_from(pod_specs()).expect("two pods");
    let job = container(&job_pod);
    let service = container(&service_pod);
    assert_eq!(
        strings(&job["args"]),
        ["--config", "/etc/invite-sync/config.toml", "sync"]
    );
    assert_eq!(text(&job_pod["restartPolicy"]), "Never");
    for key in ["securityContext", "serviceAccountName", "volumes"] {
        assert_eq!(job_pod[key], service_pod[key], "the CronJob's pod {key}");
    }
    for key in [
        "image",
        "securityContext",
        "volumeMounts",
        "env",
        "resources",
    ] {
        assert_eq!(job[key], service[key], "the CronJob's container {key}");
    }
}

#[test]
fn the_kustomizations_list_every_manifest() {
    for dir in [KUBE_BASE, KUBE_CRONJOB] {
        let kustomization = yaml(&format!("{dir}/kustomization.yaml"));
        let listed: BTreeSet<String> = strings(&kustomization["resources"])
            .into_iter()
            .filter(|r| r.ends_with(".yaml"))
            .collect();
        let present: BTreeSet<String> = std::fs::read_dir(repo_path(dir))
            .expect("the directory lists")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        assert_eq!(listed, present, "{dir}: resources and files differ");
    }
}

// ---------------------------------------------------------------------------
// Environment variables, everywhere they are set

/// Every variable a deployment file sets, with its value when the file gives one.
fn deployment_env() -> Vec<(String, String, Option<String>)> {
    let mut vars = Vec::new();
    for (kind, pod) in pod_specs() {
        if let Some(list) = container(&pod)["env"].as_sequence() {
            for var in list {
                vars.push((
                    kind.to_owned(),
                    text(&var["name"]).to_owned(),
                    var["value"].as_str().map(str::to_owned),
                ));
            }
        }
    }
    for name in ["invite-sync.service", "invite-sync-sync.service"] {
        let unit = unit(name);
        for assignment in unit["Service"].get("Environment").into_iter().flatten() {
            for word in assignment.split_whitespace() {
                let (var, value) = word.trim_matches('"').split_once('=').expect("NAME=value");
                vars.push((name.to_owned(), var.to_owned(), Some(value.to_owned())));
            }
        }
        for file in unit["Service"].get("EnvironmentFile").into_iter().flatten() {
            let path = shipped(file.trim_start_matches('-'));
            // Commented-out examples count: an operator uncomments them as they are.
            for line in read(&path).lines() {
                let line = line.trim_start_matches('#').trim();
                if let Some((var, value)) = line.split_once('=') {
                    let is_name =
                        !var.is_empty() && var.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                    if is_name {
                        vars.push((path.clone(), var.to_owned(), Some(value.to_owned())));
                    }
                }
            }
        }
    }
    // The image's own environment: the runtime stage, after the last FROM.
    let dockerfile = read("deploy/container/Dockerfile");
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a runtime stage");
    for line in runtime.lines() {
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (var, value) = rest.split_once('=').expect("ENV NAME=value");
            vars.push((
                "Dockerfile".to_owned(),
                var.to_owned(),
                Some(value.to_owned()),
            ));
        }
    }
    vars
}

#[test]
fn every_variable_the_deployments_set_is_one_invite_sync_reads() {
    let vars = deployment_env();
    assert!(
        vars.iter().any(|(_, var, _)| var == DATABASE_URL_VAR),
        "some file sets DATABASE_URL"
    );
    let (_, config) = config_map();
    for (file, var, value) in vars {
        if var == CONFIG_FILE_VAR {
            let path = value.expect("INVITE_SYNC_CONFIG has a value");
            assert!(
                path.starts_with('/'),
                "{file}: {var}={path} is not absolute"
            );
            continue;
        }
        let mut env = env(&[(DATABASE_URL_VAR, DUMMY_DATABASE_URL)]);
        if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            match value {
                // It must load: the name is a key and the value suits it.
                Some(value) => {
                    env.insert(var.clone(), value);
                    load(&config, &env);
                }
                // Its value is not in the file: the name alone must be a key.
                None => {
                    env.insert(var.clone(), String::new());
                    if let Err(error) = Settings::load(Some(&repo_path(&config)), &env) {
                        let key = rest.replace("__", ".").to_lowercase();
                        assert_eq!(env_var_name(&key), var);
                        for problem in error.problems() {
                            let unknown = problem.reason.contains("unknown")
                                || problem.reason.contains("not a configuration key");
                            assert!(
                                !(problem.key == key && unknown),
                                "{file}: {var} names no configuration key: {problem}"
                            );
                        }
                    }
                }
            }
        } else if var == DATABASE_URL_VAR || var == CLERK_SECRET_KEY_VAR {
            if let Some(value) = value {
                env.insert(var.clone(), value);
                if var == CLERK_SECRET_KEY_VAR {
                    // Either the file or the variable: not both.
                    env.insert(env_var_name("clerk.secret_key_file"), String::new());
                }
                load(&config, &env);
            }
        } else {
            panic!("{file} sets {var}, which invite-sync does not read");
        }
    }
}

#[test]
fn the_container_config_loads() {
    let dockerfile = read("deploy/container/Dockerfile");
    let installed = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ENV {CONFIG_FILE_VAR}=")))
        .expect("the image names its config file");
    let copied = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .find_map(|l| {
            let (source, target) = l.split_once(' ')?;
            (target == installed).then(|| source.to_owned())
        })
        .expect("the image copies its config file from the repository");
    let settings = load(&copied, &env(&[(DATABASE_URL_VAR, DUMMY_DATABASE_URL)]));
    assert!(settings.http.listen.ip().is_unspecified());
    let exposed = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("the image exposes a port");
    assert_eq!(exposed, settings.http.listen.port().to_string());
    // distroless's nonroot user is uid 65532, the uid the manifests run as.
    assert!(dockerfile.lines().any(|l| l == "USER nonroot"));
}

// ---------------------------------------------------------------------------
// systemd

const HARDENING: &[(&str, &str)] = &[
    ("DynamicUser", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
];

#[test]
fn the_service_unit_is_a_watched_notify_service() {
    let unit = unit("invite-sync.service");
    assert_eq!(one(&unit, "Service", "Type"), "notify");
    assert!(timespan(one(&unit, "Service", "WatchdogSec")) > Duration::ZERO);
    assert_eq!(one(&unit, "Service", "Restart"), "on-failure");
    assert_eq!(
        one(&unit, "Service", "ExecStart"),
        "/usr/local/bin/invite-sync --config /etc/invite-sync/config.toml run"
    );
    assert_eq!(
        one(&unit, "Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    for (key, value) in HARDENING {
        assert_eq!(one(&unit, "Service", key), *value, "{key}=");
    }
    assert!(unit["Service"]["SystemCallFilter"].contains(&"@system-service".to_owned()));
}

#[test]
fn the_units_stop_after_a_clean_shutdown_and_read_their_credential() {
    let settings = systemd_settings();
    assert_eq!(settings.log.format, LogFormat::Json);
    for (name, command) in [
        ("invite-sync.service", "run"),
        ("invite-sync-sync.service", "sync"),
    ] {
        let unit = unit(name);
        let exec = one(&unit, "Service", "ExecStart");
        assert_eq!(
            exec.split_whitespace().last(),
            Some(command),
            "{name} runs {command}"
        );
        let config = config_argument(exec);
        assert_eq!(config, "/etc/invite-sync/config.toml");
        assert!(
            repo_path(&shipped(&config)).is_file(),
            "{name}: {config} is shipped"
        );

        let stop = timespan(one(&unit, "Service", "TimeoutStopSec"));
        assert!(
            stop > settings.sync.shutdown_timeout(),
            "{name}: TimeoutStopSec {stop:?} must exceed sync.shutdown_timeout_seconds {:?}",
            settings.sync.shutdown_timeout()
        );

        // clerk.secret_key_file is the credential LoadCredential= provides.
        let credential = one(&unit, "Service", "LoadCredential");
        let (credential_name, source) = credential
            .split_once(':')
            .expect("LoadCredential=NAME:PATH");
        assert!(source.starts_with("/etc/invite-sync/"), "{source}");
        assert_eq!(
            settings.clerk.secret_key_file.as_deref(),
            Some(Path::new(&format!(
                "{CREDENTIALS_DIRECTORY}/{credential_name}"
            ))),
            "{name}: clerk.secret_key_file is not the credential {credential_name}"
        );

        for (key, value) in HARDENING {
            assert_eq!(one(&unit, "Service", key), *value, "{name}: {key}=");
        }
    }
    // Without systemd's credentials directory the %d path cannot resolve: it really is used.
    let config = shipped(&config_argument(one(
        &unit("invite-sync.service"),
        "Service",
        "ExecStart",
    )));
    let error = Settings::load(
        Some(&repo_path(&config)),
        &env(&[(DATABASE_URL_VAR, DUMMY_DATABASE_URL)]),
    )
    .expect_err("%d needs CREDENTIALS_DIRECTORY");
    assert!(error.mentions("clerk.secret_key_file"), "{error}");
}

#[test]
fn the_timer_starts_a_oneshot_whose_failures_show() {
    let timer = unit("invite-sync-sync.timer");
    assert_eq!(
        one(&timer, "Timer", "Unit"),
        "invite-sync-sync.service",
        "the timer starts the one-shot service"
    );
    assert!(!one(&timer, "Timer", "OnCalendar").is_empty());
    let service = unit("invite-sync-sync.service");
    assert_eq!(one(&service, "Service", "Type"), "oneshot");
    // Exit 3 (revocations held) must leave the unit failed, so it must not count as success.
    let success = service["Service"]
        .get("SuccessExitStatus")
        .cloned()
        .unwrap_or_default();
    assert!(
        !success
            .iter()
            .flat_map(|s| s.split_whitespace())
            .any(|code| code == "3"),
        "SuccessExitStatus hides held revocations"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes: the migrations run as the migrator, before the service

#[test]
fn every_pod_migrates_as_the_migrator_before_its_service_starts_as_the_run_role() {
    assert!(
        !kube_settings().database.migrate_on_start,
        "the service's role may not change the schema: the ConfigMap's config must not migrate"
    );
    for (kind, pod) in pod_specs() {
        let service = container(&pod);
        let inits = seq(&pod["initContainers"]);
        assert_eq!(inits.len(), 1, "{kind}: one init container, the migration");
        let init = &inits[0];
        assert_eq!(
            strings(&init["args"]),
            ["--config", "/etc/invite-sync/config.toml", "migrate"],
            "{kind}: the init container migrates"
        );
        let database = named(&init["env"], DATABASE_URL_VAR);
        let secret = &database["valueFrom"]["secretKeyRef"];
        assert_eq!(text(&secret["name"]), "invite-sync-migrator", "{kind}");
        assert_eq!(text(&secret["key"]), "database-url", "{kind}");
        // The service itself never sees the migrator's Secret.
        for var in seq(&service["env"]) {
            assert_ne!(
                var["valueFrom"]["secretKeyRef"]["name"].as_str(),
                Some("invite-sync-migrator"),
                "{kind}: the service's container reads the migrator's Secret"
            );
        }
        for key in ["image", "securityContext", "volumeMounts", "resources"] {
            assert_eq!(
                init[key], service[key],
                "{kind}: the init container's {key}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The install as written: docs/operations.md's roles and grants, `invite-sync-admin migrate`
// as the migrator, and the unit's `run` with the shipped config as the run-only role

const OPERATIONS_MD: &str = "docs/operations.md";
const ADMIN_SCRIPT: &str = "deploy/systemd/invite-sync-admin";

/// The body of the first fenced block after the line `<!-- marker -->` in `doc`.
pub(crate) fn marked_block(doc: &str, marker: &str) -> String {
    let comment = format!("<!-- {marker} -->");
    let after = doc
        .split_once(&comment)
        .unwrap_or_else(|| panic!("no {comment} in the document"))
        .1;
    let fence = after
        .find("```")
        .unwrap_or_else(|| panic!("no code block after {comment}"));
    let body = &after[fence + 3..];
    let body = &body[body.find('\n').expect("the fence line ends") + 1..];
    let end = body.find("```").expect("the code block is closed");
    body[..end].to_owned()
}

/// `text` with every `word` (not part of a longer identifier) replaced by `by`.
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(word);
        } else {
            out.push_str(by);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The password a `CREATE ROLE name ... PASSWORD '...'` statement of `sql` gives `role`.
fn password_of(sql: &str, role: &str) -> String {
    sql.lines()
        .find(|line| line.contains(&format!("CREATE ROLE {role} ")))
        .and_then(|line| line.split_once("PASSWORD '"))
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(password, _)| password.to_owned())
        .unwrap_or_else(|| panic!("the roles block gives {role} no password"))
}

/// The two roles of one test, under names of their own (roles are cluster-wide), dropped
/// when the value is: after the databases they hold objects in.
struct Roles {
    migrator: String,
    run: String,
    admin: String,
}

impl Drop for Roles {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let names = [self.migrator.clone(), self.run.clone()];
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                use sqlx::{ConnectOptions, Executor};
                let options: sqlx::postgres::PgConnectOptions = admin.parse()?;
                let mut conn = options.connect().await?;
                for name in names {
                    conn.execute(format!(r#"DROP ROLE IF EXISTS "{name}""#).as_str())
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test's roles: {error}");
        }
    }
}

/// `url` (a test database's) for `user` with `password`.
fn url_as(url: &str, user: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_username(user).expect("a user can be set");
    url.set_password(Some(password))
        .expect("a password can be set");
    url.to_string()
}

/// A shipped environment file with its `DATABASE_URL` line replaced by `url`.
fn env_file_with_url(shipped_file: &str, url: &str) -> String {
    let text = read(shipped_file);
    let mut replaced = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&format!("{DATABASE_URL_VAR}=")) {
                replaced += 1;
                format!("{DATABASE_URL_VAR}={url}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(replaced, 1, "{shipped_file} sets DATABASE_URL once");
    lines.join("\n") + "\n"
}

/// The shipped `invite-sync-admin` with its two paths pointing at `etc` and the built binary.
fn admin_script(etc: &Path) -> String {
    let script = read(ADMIN_SCRIPT);
    for line in ["etc=/etc/invite-sync", "bin=/usr/local/bin/invite-sync"] {
        assert!(
            script.lines().any(|l| l == line),
            "{ADMIN_SCRIPT} has no line {line}"
        );
    }
    script
        .replace("etc=/etc/invite-sync", &format!("etc='{}'", etc.display()))
        .replace(
            "bin=/usr/local/bin/invite-sync",
            &format!("bin='{}'", env!("CARGO_BIN_EXE_invite-sync")),
        )
}

fn sh(script: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.arg(script).args(args);
    command
}

#[tokio::test]
async fn the_install_as_written_migrates_as_the_migrator_and_runs_as_the_run_role() {
    // Declared first, so dropped last: a role is dropped after the databases it owns objects in.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let roles = Roles {
        migrator: format!("invite_migrator_{suffix}"),
        run: format!("invite_sync_{suffix}"),
        admin: crate::common::server_url(),
    };
    let db = TestDb::empty().await;
    let sim = invite_sync::clerk::sim::start(SimOptions::default())
        .await
        .expect("the simulator starts");

    // Database prerequisites, steps 1 and 2, as operations.md writes them.
    let doc = read(OPERATIONS_MD);
    let as_test = |sql: &str| {
        let sql = replace_word(sql, "invite_migrator", &roles.migrator);
        replace_word(&sql, "invite_sync", &roles.run)
    };
    let roles_sql = marked_block(&doc, "prerequisites: roles");
    let migrator_password = password_of(&roles_sql, "invite_migrator");
    let run_password = password_of(&roles_sql, "invite_sync");
    for (name, sql) in [
        ("roles", roles_sql.clone()),
        ("grants", marked_block(&doc, "prerequisites: grants")),
    ] {
        db.pool
            .execute(as_test(&sql).as_str())
            .await
            .unwrap_or_else(|e| panic!("the {name} block of {OPERATIONS_MD} fails: {e}"));
    }
    let migrator_url = url_as(&db.url(), &roles.migrator, &migrator_password);
    let run_url = url_as(&db.url(), &roles.run, &run_password);

    // /etc/invite-sync as the install writes it, the URLs and the key edited in.
    let scratch = Scratch::new("install");
    let etc = scratch.0.join("etc");
    std::fs::create_dir_all(&etc).expect("etc can be made");
    let install = |name: &str, contents: &str| {
        std::fs::write(etc.join(name), contents).expect("a file is installed");
    };
    install(
        "config.toml",
        &read(&format!("{SYSTEMD}/etc/invite-sync/config.toml")),
    );
    let service_env = env_file_with_url(
        &format!("{SYSTEMD}/etc/invite-sync/invite-sync.env"),
        &run_url,
    );
    install("invite-sync.env", &service_env);
    install(
        "migrator.env",
        &env_file_with_url(
            &format!("{SYSTEMD}/etc/invite-sync/migrator.env"),
            &migrator_url,
        ),
    );
    install("clerk-secret-key", &format!("{}\n", sim.secret_key()));
    let admin = scratch.write("invite-sync-admin", &admin_script(&etc));

    // `config check` through the wrapper, on the shipped files: no error.
    let mut check = Proc::start(
        "invite-sync-admin config check".to_owned(),
        sh(&admin, &["config", "check"]),
        &[],
    );
    let checked = check.wait(Duration::from_secs(30)).await;
    checked.assert_code(0);
    assert!(checked.stderr.is_empty(), "{checked}");
    assert!(!checked.stdout.contains(&run_password), "{checked}");

    // Migrating as the run role fails, naming the role it connected as (not the password).
    let mut as_run_role = Proc::start(
        "invite-sync migrate as the run role".to_owned(),
        bare_command(&[(CREDENTIALS_DIRECTORY_VAR, &etc.display().to_string())]),
        &[
            "--env-file",
            &etc.join("invite-sync.env").display().to_string(),
            "--config",
            &etc.join("config.toml").display().to_string(),
            "migrate",
        ],
    );
    let refused = as_run_role.wait(Duration::from_secs(30)).await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains(&format!("database user \"{}\"", roles.run)),
        "the error names the role: {refused}"
    );
    assert!(!refused.stderr.contains(&run_password), "{refused}");

    // `invite-sync-admin migrate` connects as the migrator, who then owns the tables.
    let mut migrate = Proc::start(
        "invite-sync-admin migrate".to_owned(),
        sh(&admin, &["migrate"]),
        &[],
    );
    let migrated = migrate.wait(Duration::from_secs(60)).await;
    migrated.assert_code(0);
    assert!(migrated.stdout.contains("applied"), "{migrated}");
    let foreign_owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1",
    )
    .bind(&roles.migrator)
    .fetch_one(&db.pool)
    .await
    .expect("the owners can be read");
    assert_eq!(foreign_owned, 0, "every table is the migrator's");

    // The unit's ExecStart, its EnvironmentFile= (the service's, with the simulator's address
    // and a free port added) and its LoadCredential= directory.
    let port = free_port().expect("a loopback port is free");
    let service_env = format!(
        "{service_env}INVITE_SYNC__CLERK__API_URL={}\nINVITE_SYNC__HTTP__LISTEN=127.0.0.1:{port}\n\
         INVITE_SYNC__DATABASE__MAX_CONNECTIONS=5\n",
        sim.base_url()
    );
    let unit = unit("invite-sync.service");
    let exec = one(&unit, "Service", "ExecStart");
    let words: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|word| {
            if word == "/etc/invite-sync/config.toml" {
                etc.join("config.toml").display().to_string()
            } else {
                word.to_owned()
            }
        })
        .collect();
    let mut command = bare_command(&[(CREDENTIALS_DIRECTORY_VAR, &etc.display().to_string())]);
    command.envs(invite_sync::config::parse_env_file(&service_env).expect("the env file parses"));
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut service = Proc::spawn(command, &args);
    let client = crate::common::http_client();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    service
        .wait_until("/readyz to answer ready", Duration::from_secs(60), || {
            let client = client.clone();
            let ready = ready.clone();
            async move {
                match client.get(&ready).send().await {
                    Ok(response) if response.status() == StatusCode::OK => response
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|body| body["status"] == "ready"),
                    _ => false,
                }
            }
        })
        .await;

    // The run role does the service's work: a roster row becomes an invitation.
    sqlx::query("INSERT INTO desired_invitees (email) VALUES ('ann@example.com')")
        .execute(&db.pool)
        .await
        .expect("a roster row is written");
    service
        .wait_until(
            "the roster row to become a pending invitation",
            Duration::from_secs(30),
            || {
                let invited = sim.invitations().iter().any(|i| {
                    i.email_address == "ann@example.com"
                        && i.status == invite_sync::clerk::InvitationStatus::Pending
                });
                std::future::ready(invited)
            },
        )
        .await;
    service.signal("TERM");
    service.wait(Duration::from_secs(45)).await.assert_code(0);

    // Backup and restore as written: a whole-database dump taken with the service's URL,
    // restored as the migrator into a new database prepared by the same grants.
    let backup = marked_block(&doc, "backup: whole database");
    let mut dump = Command::new("sh");
    dump.current_dir(&scratch.0)
        .env(DATABASE_URL_VAR, &run_url)
        .args(["-c", &backup]);
    let mut dumping = Proc::start("the backup block".to_owned(), dump, &[]);
    dumping.wait(Duration::from_secs(60)).await.assert_code(0);
    let file = std::fs::read_dir(&scratch.0)
        .expect("the scratch directory lists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("invite-sync-") && name.ends_with(".dump"))
        .expect("the backup block writes invite-sync-<time>.dump");

    let restored = TestDb::empty().await;
    restored
        .pool
        .execute(as_test(&marked_block(&doc, "prerequisites: grants")).as_str())
        .await
        .expect("the grants apply to the new database");
    let restore_block = marked_block(&doc, "restore: whole database");
    let named = restore_block
        .split_whitespace()
        .find(|w| w.starts_with("invite-sync-") && w.ends_with(".dump"))
        .expect("the restore block names a dump file")
        .to_owned();
    let mut restore = Command::new("sh");
    restore
        .current_dir(&scratch.0)
        .env(
            "MIGRATOR_DATABASE_URL",
            url_as(&restored.url(), &roles.migrator, &migrator_password),
        )
        .args(["-c", &restore_block.replace(&named, &file)]);
    let mut restoring = Proc::start("the restore block".to_owned(), restore, &[]);
    restoring.wait(Duration::from_secs(60)).await.assert_code(0);
    let run_role = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url_as(&restored.url(), &roles.run, &run_password))
        .await
        .expect("the run role connects to the restored database");
    let invited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invite_sync_ledger WHERE email = 'ann@example.com'",
    )
    .fetch_one(&run_role)
    .await
    .expect("the run role reads the restored ledger");
    assert!(invited >= 1, "the restored ledger holds the invitation");
    run_role.close().await;
    drop(restored);
    drop(db);
    drop(roles);
}
