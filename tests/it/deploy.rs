//! The deployment files under deploy/ against the code they deploy: every configuration they
//! carry loads through the real loader, every variable they set is one invite-sync reads,
//! the probes hit routes the server answers on the port it listens on, the grace periods
//! outlast the shutdown timeout, and the systemd credential is the file the config reads.
//! Schema validity (Kubernetes, systemd, Dockerfile) is `scripts/check-deploy`'s part.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use invite_sync::config::{
    env_var_name, LogFormat, Settings, CLERK_SECRET_KEY_VAR, CREDENTIALS_DIRECTORY_VAR,
    DATABASE_URL_VAR, ENV_PREFIX,
};
use reqwest::StatusCode;
use serde_yaml::Value;

use crate::common::{env, read, repo_path, yaml, Harness, Service};

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
