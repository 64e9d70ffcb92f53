//! `template.yaml` must declare exactly the tables, queues and schedule group that
//! `adapters/aws/resources.rs` defines (and that the tests create), and wire their names
//! into the functions' environment under the names `ResourceNames::from_env` reads.

use std::collections::BTreeSet;

use serde_yaml::value::TaggedValue;
use serde_yaml::Value;

use postback::adapters::aws::env;
use postback::adapters::aws::resources::{
    KeyDef, TableDef, CONTROL_TABLE, FIRING_QUEUE, SCHEDULER_ROLE_LOGICAL_ID, SCHEDULE_GROUP_LOGICAL_ID, TABLES,
};
use postback::adapters::aws::STATS_SETTLE;
use postback::entry::config::MAX_DELIVERY_TIMEOUT_MS;
use postback::entry::lambda::{FUNCTION_TIMEOUT_ENV, STORE_MARGIN};

const TEMPLATE: &str = include_str!("../../../template.yaml");

/// Dispatch makes every `ControlStore` call: breaker reads (GetItem) and conditional
/// writes (PutItem), slot cursors (UpdateItem), hold (BatchWriteItem), release (Query,
/// BatchWriteItem), forget (DeleteItem) of a postback deleted meanwhile.
const DISPATCH_CONTROL_ACTIONS: &[&str] = &[
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
];
/// config-api: `health` (GetItem, BatchGetItem, Query count), resume (PutItem, Query,
/// BatchWriteItem), delete (Query, BatchWriteItem). It takes no slots: no UpdateItem.
const CONFIG_API_CONTROL_ACTIONS: &[&str] = &[
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
];

fn tagged(tag: &str, value: &str) -> Value {
    Value::Tagged(Box::new(TaggedValue { tag: serde_yaml::value::Tag::new(tag), value: Value::String(value.into()) }))
}

fn key_schema(key: KeyDef) -> Value {
    let mut elements = vec![serde_yaml::to_value(serde_json::json!({"AttributeName": key.hash, "KeyType": "HASH"}))];
    if let Some(range) = key.range {
        elements.push(serde_yaml::to_value(serde_json::json!({"AttributeName": range, "KeyType": "RANGE"})));
    }
    Value::Sequence(elements.into_iter().map(|v| v.unwrap_or(Value::Null)).collect())
}

fn check_table(resources: &Value, def: &TableDef, problems: &mut Vec<String>) {
    let table = &resources[def.logical_id];
    let props = &table["Properties"];
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            problems.push(format!("{}: {what}", def.logical_id));
        }
    };
    expect("is an AWS::DynamoDB::Table", table["Type"].as_str() == Some("AWS::DynamoDB::Table"));
    expect("BillingMode PAY_PER_REQUEST", props["BillingMode"].as_str() == Some("PAY_PER_REQUEST"));
    expect(
        "point-in-time recovery on",
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool() == Some(true),
    );
    expect("KeySchema", props["KeySchema"] == key_schema(def.key));
    let declared: BTreeSet<(String, String)> = props["AttributeDefinitions"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|a| {
                    (
                        a["AttributeName"].as_str().unwrap_or("").to_string(),
                        a["AttributeType"].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let wanted: BTreeSet<(String, String)> = def.key_attributes().into_iter().map(|a| (a.into(), "S".into())).collect();
    expect(&format!("AttributeDefinitions {declared:?} != {wanted:?}"), declared == wanted);
    let indexes = props["GlobalSecondaryIndexes"].as_sequence().cloned().unwrap_or_default();
    expect("index count", indexes.len() == def.indexes.len());
    for index in def.indexes {
        let found = indexes.iter().find(|i| i["IndexName"].as_str() == Some(index.name));
        expect(&format!("index {} declared", index.name), found.is_some());
        if let Some(found) = found {
            expect(&format!("index {} KeySchema", index.name), found["KeySchema"] == key_schema(index.key));
            let projection = &found["Projection"];
            match index.include {
                None => expect(
                    &format!("index {} projects ALL", index.name),
                    projection["ProjectionType"].as_str() == Some("ALL"),
                ),
                Some(names) => {
                    let declared: BTreeSet<&str> = projection["NonKeyAttributes"]
                        .as_sequence()
                        .map(|s| s.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let wanted: BTreeSet<&str> = names.iter().copied().collect();
                    expect(
                        &format!("index {} projects INCLUDE {wanted:?}, declared {declared:?}", index.name),
                        projection["ProjectionType"].as_str() == Some("INCLUDE") && declared == wanted,
                    );
                }
            }
        }
    }
    let ttl = &props["TimeToLiveSpecification"];
    match def.ttl_attribute {
        Some(attribute) => {
            expect("TTL attribute", ttl["AttributeName"].as_str() == Some(attribute));
            expect("TTL enabled", ttl["Enabled"].as_bool() == Some(true));
        }
        None => expect("no TTL", ttl.is_null()),
    }
}

/// Every mismatch between the template and the definitions, in words.
fn check_template(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("template.yaml does not parse: {e}")],
    };
    let resources = &doc["Resources"];
    for def in &TABLES {
        check_table(resources, def, &mut problems);
    }

    let mut expect = |what: &str, ok: bool| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    let queue = &resources[FIRING_QUEUE.logical_id];
    let dlq = &resources[FIRING_QUEUE.dead_letter_logical_id];
    let as_u64 = |v: &Value| v.as_u64();
    expect("queue type", queue["Type"].as_str() == Some("AWS::SQS::Queue"));
    expect("dead-letter queue type", dlq["Type"].as_str() == Some("AWS::SQS::Queue"));
    let queue_props = &queue["Properties"];
    let redrive = &queue_props["RedrivePolicy"];
    for (what, declared, defined) in [
        ("queue VisibilityTimeout", &queue_props["VisibilityTimeout"], FIRING_QUEUE.visibility_timeout_s),
        ("queue MessageRetentionPeriod", &queue_props["MessageRetentionPeriod"], FIRING_QUEUE.retention_s),
        (
            "dead-letter queue MessageRetentionPeriod",
            &dlq["Properties"]["MessageRetentionPeriod"],
            FIRING_QUEUE.retention_s,
        ),
        ("RedrivePolicy maxReceiveCount", &redrive["maxReceiveCount"], FIRING_QUEUE.max_receive_count),
    ] {
        expect(what, as_u64(declared) == Some(u64::from(defined)));
    }
    expect(
        "RedrivePolicy targets the dead-letter queue",
        redrive["deadLetterTargetArn"] == tagged("!GetAtt", &format!("{}.Arn", FIRING_QUEUE.dead_letter_logical_id)),
    );
    expect(
        "schedule group",
        resources[SCHEDULE_GROUP_LOGICAL_ID]["Type"].as_str() == Some("AWS::Scheduler::ScheduleGroup"),
    );
    expect("scheduler role", resources[SCHEDULER_ROLE_LOGICAL_ID]["Type"].as_str() == Some("AWS::IAM::Role"));

    // The dispatch function and its event source.
    let dispatch = &resources["DispatchFunction"]["Properties"];
    let timeout = as_u64(&dispatch["Timeout"]).unwrap_or(u64::MAX);
    expect(
        "queue VisibilityTimeout >= 6 x dispatch Timeout",
        u64::from(FIRING_QUEUE.visibility_timeout_s) >= timeout.saturating_mul(6),
    );
    // DELIVERY_TIMEOUT_MS: the template's bounds are the code's, and the longest request
    // plus the store margin fits a fresh dispatch invocation (else nothing ever starts).
    let delivery_timeout = &doc["Parameters"]["DeliveryTimeoutMs"];
    expect("DeliveryTimeoutMs MinValue 1", as_u64(&delivery_timeout["MinValue"]) == Some(1));
    expect(
        &format!("DeliveryTimeoutMs MaxValue {MAX_DELIVERY_TIMEOUT_MS} (entry::config)"),
        as_u64(&delivery_timeout["MaxValue"]) == Some(MAX_DELIVERY_TIMEOUT_MS),
    );
    let budget_ms = MAX_DELIVERY_TIMEOUT_MS + u64::try_from(STORE_MARGIN.as_millis()).unwrap_or(u64::MAX);
    expect("dispatch Timeout > DeliveryTimeoutMs MaxValue + store margin", timeout.saturating_mul(1000) > budget_ms);
    // The batch's budget when the runtime's deadline is implausible (`entry::lambda`).
    let function_timeout = &dispatch["Environment"]["Variables"][FUNCTION_TIMEOUT_ENV];
    expect(
        "dispatch FUNCTION_TIMEOUT_SECONDS = its Timeout",
        as_u64(function_timeout).or_else(|| function_timeout.as_str().and_then(|t| t.parse().ok())) == Some(timeout),
    );
    // An entry is written by the invocation that fired it; the stats roll-ups take
    // entries older than STATS_SETTLE as final, so every function must end sooner.
    let default_timeout = as_u64(&doc["Globals"]["Function"]["Timeout"]).unwrap_or(u64::MAX);
    let settle_s = u64::try_from(STATS_SETTLE.num_seconds()).unwrap_or(0);
    for function in ["ConfigApiFunction", "IngestFunction", "DispatchFunction"] {
        let timeout = as_u64(&resources[function]["Properties"]["Timeout"]).unwrap_or(default_timeout);
        expect(&format!("{function} Timeout < stats settle time ({settle_s} s)"), timeout < settle_s);
    }
    let source = &dispatch["Events"]["Firings"]["Properties"];
    expect("dispatch reads the firing queue", source["Queue"] == tagged("!GetAtt", "FiringQueue.Arn"));
    expect(
        "dispatch reports batch item failures",
        source["FunctionResponseTypes"].as_sequence().is_some_and(|t| t.iter().any(|v| v == "ReportBatchItemFailures")),
    );
    for (function, binary) in
        [("ConfigApiFunction", "config-api"), ("IngestFunction", "ingest"), ("DispatchFunction", "dispatch")]
    {
        let metadata = &resources[function]["Metadata"];
        expect(
            &format!("{function} builds with cargo lambda"),
            metadata["BuildMethod"].as_str() == Some("rust-cargolambda"),
        );
        expect(&format!("{function} binary {binary}"), metadata["BuildProperties"]["Binary"].as_str() == Some(binary));
    }

    // Least privilege on the control table: what each function's ControlStore calls
    // need (docs/aws.md), nothing through SAM's broad policy templates, and no Scan.
    let control_arn = tagged("!GetAtt", &format!("{}.Arn", CONTROL_TABLE.logical_id));
    let control_ref = tagged("!Ref", CONTROL_TABLE.logical_id);
    for (function, wanted) in [
        ("ConfigApiFunction", CONFIG_API_CONTROL_ACTIONS),
        ("DispatchFunction", DISPATCH_CONTROL_ACTIONS),
        ("IngestFunction", &[][..]),
    ] {
        let policies = resources[function]["Properties"]["Policies"].as_sequence().cloned().unwrap_or_default();
        let mut granted = BTreeSet::new();
        for policy in &policies {
            let template_on_control = policy
                .as_mapping()
                .into_iter()
                .flatten()
                .any(|(name, args)| name.as_str() != Some("Statement") && args["TableName"] == control_ref);
            expect(&format!("{function}: no SAM policy template on the control table"), !template_on_control);
            for statement in policy["Statement"].as_sequence().into_iter().flatten() {
                if statement["Resource"] == control_arn {
                    for action in statement["Action"].as_sequence().into_iter().flatten() {
                        granted.insert(action.as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        let wanted: BTreeSet<String> = wanted.iter().map(|a| (*a).to_string()).collect();
        expect(&format!("{function}: control table actions {granted:?} != {wanted:?}"), granted == wanted);
    }

    // The names the adapters read, from the resources above.
    let variables = &doc["Globals"]["Function"]["Environment"]["Variables"];
    let wiring = [
        (env::POSTBACKS_TABLE, tagged("!Ref", "PostbacksTable")),
        (env::TOUCHES_TABLE, tagged("!Ref", "TouchesTable")),
        (env::LOGS_TABLE, tagged("!Ref", "LogsTable")),
        (env::CONTROL_TABLE, tagged("!Ref", "ControlTable")),
        (env::QUEUE_URL, tagged("!Ref", FIRING_QUEUE.logical_id)),
        (env::QUEUE_ARN, tagged("!GetAtt", &format!("{}.Arn", FIRING_QUEUE.logical_id))),
        (env::DEAD_LETTER_QUEUE_ARN, tagged("!GetAtt", &format!("{}.Arn", FIRING_QUEUE.dead_letter_logical_id))),
        (env::SCHEDULE_GROUP, tagged("!Ref", SCHEDULE_GROUP_LOGICAL_ID)),
        (env::SCHEDULER_ROLE_ARN, tagged("!GetAtt", &format!("{SCHEDULER_ROLE_LOGICAL_ID}.Arn"))),
    ];
    for (name, value) in wiring {
        expect(&format!("environment {name}"), variables[name] == value);
    }
    problems
}

#[test]
fn template_declares_the_defined_resources() {
    let problems = check_template(TEMPLATE);
    assert!(problems.is_empty(), "template.yaml disagrees with resources.rs:\n{}", problems.join("\n"));
}

/// The API Gateway routes of all functions: exactly the router's table
/// (`entry::http::ROUTES`) minus `GET /metrics`, which is the local server's only.
#[test]
fn template_routes_are_the_router_table() {
    let template: Value = serde_yaml::from_str(TEMPLATE).unwrap_or(Value::Null);
    let mut routes = BTreeSet::new();
    for (_, resource) in template["Resources"].as_mapping().into_iter().flatten() {
        for (_, event) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if event["Type"].as_str() == Some("HttpApi") {
                let props = &event["Properties"];
                routes.insert((
                    props["Method"].as_str().unwrap_or_default().to_string(),
                    props["Path"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = postback::entry::http::ROUTES
        .iter()
        .filter(|(_, path, _)| *path != "/metrics")
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes, expected);
}

#[test]
fn the_check_notices_a_difference() {
    let changed = TEMPLATE.replace("maxReceiveCount: 5", "maxReceiveCount: 6");
    assert_eq!(check_template(&changed), ["RedrivePolicy maxReceiveCount"]);
    let changed =
        TEMPLATE.replacen("AttributeName: log_shard, KeyType: HASH", "AttributeName: shard, KeyType: HASH", 1);
    assert!(check_template(&changed).iter().any(|p| p.contains("index newest KeySchema")));
    let changed =
        TEMPLATE.replace("TimeToLiveSpecification: { AttributeName: expires_at, Enabled: true }\n      Point", "Point");
    assert!(check_template(&changed).iter().any(|p| p == "TouchesTable: TTL attribute"));
    let changed = TEMPLATE.replace("MaxValue: 30000", "MaxValue: 300000");
    assert_eq!(check_template(&changed), ["DeliveryTimeoutMs MaxValue 30000 (entry::config)"]);
    let changed = TEMPLATE.replace("Timeout: 60\n", "Timeout: 40\n");
    assert_eq!(
        check_template(&changed),
        [
            "dispatch Timeout > DeliveryTimeoutMs MaxValue + store margin",
            "dispatch FUNCTION_TIMEOUT_SECONDS = its Timeout"
        ]
    );
    let changed = TEMPLATE.replace("FUNCTION_TIMEOUT_SECONDS: 60\n", "FUNCTION_TIMEOUT_SECONDS: 59\n");
    assert_eq!(check_template(&changed), ["dispatch FUNCTION_TIMEOUT_SECONDS = its Timeout"]);
    let changed = TEMPLATE.replace("    Timeout: 29\n", "    Timeout: 300\n");
    assert_eq!(
        check_template(&changed),
        ["ConfigApiFunction Timeout < stats settle time (300 s)", "IngestFunction Timeout < stats settle time (300 s)"]
    );
    let changed = TEMPLATE.replacen("                - dynamodb:UpdateItem\n", "", 1);
    assert!(check_template(&changed).iter().any(|p| p.starts_with("DispatchFunction: control table actions")));
    let changed = TEMPLATE.replace(
        "        - DynamoDBCrudPolicy: { TableName: !Ref TouchesTable }\n",
        "        - DynamoDBCrudPolicy: { TableName: !Ref TouchesTable }\n        - DynamoDBCrudPolicy: { TableName: !Ref ControlTable }\n",
    );
    assert_eq!(check_template(&changed), ["IngestFunction: no SAM policy template on the control table"]);
    assert!(!check_template("Resources: {}").is_empty());
}
