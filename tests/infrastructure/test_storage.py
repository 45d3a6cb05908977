"""Storage: EFS (encryption, throughput, lifecycle, policy, access points), buckets and tables."""

from __future__ import annotations

from aws_cdk.assertions import Match

from stacks import constants as C
from tests.infrastructure.conftest import as_list

ROOT = "elasticfilesystem:ClientRootAccess"


def file_system(node):
    (properties,) = [r["Properties"] for r in node.resources("AWS::EFS::FileSystem").values()]
    return properties


def test_efs_is_encrypted_elastic_and_tiers_to_infrequent_access(node):
    node.template.has_resource_properties(
        "AWS::EFS::FileSystem",
        {
            "Encrypted": True,
            "ThroughputMode": "elastic",
            "LifecyclePolicies": Match.array_with(
                [{"TransitionToIA": "AFTER_30_DAYS"}, {"TransitionToPrimaryStorageClass": "AFTER_1_ACCESS"}]
            ),
        },
    )


def test_layer_cost_estimates_use_the_file_system_lifecycle(node):
    api = node.json["Resources"][node.logical_id(node.stack.functions["api"])]["Properties"]
    assert api["Environment"]["Variables"]["LAYER_IA_AFTER_DAYS"] == str(C.EFS_IA_AFTER_DAYS)
    assert {"TransitionToIA": f"AFTER_{C.EFS_IA_AFTER_DAYS}_DAYS"} in file_system(node)["LifecyclePolicies"]


def test_efs_policy_denies_unencrypted_transport(node):
    statements = file_system(node)["FileSystemPolicy"]["Statement"]
    assert {
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Sid": "DenyUnencryptedTransport",
    } in statements


def test_efs_policy_grants_nothing_at_all(node):
    """No Allow: anonymous NFS clients are refused, and IAM clients only have what their own identity
    policy grants through their access point (a shared Allow would let one slot mount another)."""
    statements = file_system(node)["FileSystemPolicy"]["Statement"]
    assert statements and all(s["Effect"] == "Deny" for s in statements)


def test_efs_policy_denies_every_write_that_bypasses_an_access_point(node):
    statements = file_system(node)["FileSystemPolicy"]["Statement"]
    (deny,) = [s for s in statements if s.get("Sid") == "DenyWritesWithoutAccessPoint"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert deny["Action"] == "elasticfilesystem:ClientWrite"
    assert deny["Condition"] == {"Null": {"elasticfilesystem:AccessPointArn": "true"}}


def test_every_efs_client_writes_through_a_named_access_point(node):
    """No identity policy of the node grants ClientWrite on the file system without naming the
    access point(s) it may write through."""
    for policy in (
        *node.resources("AWS::IAM::Policy").values(),
        *node.resources("AWS::IAM::ManagedPolicy").values(),
    ):
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "elasticfilesystem:ClientWrite" in as_list(statement["Action"]):
                access_points = statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]
                assert all("Fn::GetAtt" in ap or "Fn::Join" in ap for ap in as_list(access_points))
    for role in node.resources("AWS::IAM::Role").values():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                if "elasticfilesystem:ClientWrite" in as_list(statement["Action"]):
                    assert "elasticfilesystem:AccessPointArn" in statement["Condition"]["StringEquals"]


def test_only_the_runs_manager_may_act_as_root(node):
    runs_manager = {"Fn::GetAtt": [node.logical_id(node.stack.functions.roles["runs_manager"]), "Arn"]}
    statements = file_system(node)["FileSystemPolicy"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny" and s["Action"] == ROOT]
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": runs_manager}}
    root_grants = [
        statement
        for policy in node.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if ROOT in as_list(statement["Action"])
    ]
    assert root_grants
    runs_manager_policies = {
        node.logical_id(node.stack.functions.roles["runs_manager"].node.find_child("DefaultPolicy"))
    }
    for logical_id, policy in node.resources("AWS::IAM::Policy").items():
        if any(ROOT in as_list(s["Action"]) for s in policy["Properties"]["PolicyDocument"]["Statement"]):
            assert logical_id in runs_manager_policies


def test_access_points_act_as_uid_1000_on_runs_layers_and_each_slot(node):
    access_points = [r["Properties"] for r in node.resources("AWS::EFS::AccessPoint").values()]
    paths = sorted(ap["RootDirectory"]["Path"] for ap in access_points)
    slots = [f"{C.SLOTS_PATH}/{C.slot_id(i)}" for i in range(node.stack.settings.run_slots)]
    assert paths == sorted([C.RUNS_PATH, C.LAYERS_PATH, *slots])
    for ap in access_points:
        assert ap["PosixUser"] == {"Uid": "1000", "Gid": "1000"}
        assert ap["RootDirectory"]["CreationInfo"]["OwnerUid"] == "1000"


def test_slot_access_points_are_tagged_with_their_slot(node):
    tags = [
        {t["Key"]: t["Value"] for t in r["Properties"]["AccessPointTags"]}
        for r in node.resources("AWS::EFS::AccessPoint").values()
    ]
    slot_tags = sorted(t[C.SLOT_TAG_KEY] for t in tags if C.SLOT_TAG_KEY in t)
    assert slot_tags == [C.slot_id(i) for i in range(10)]


def test_variant_creates_as_many_slots_as_configured(variant):
    assert len(variant.resources("AWS::EFS::AccessPoint")) == 3 + 2


def test_every_bucket_blocks_public_access_encrypts_and_expires(node):
    buckets = node.resources("AWS::S3::Bucket")
    assert len(buckets) == 3
    for bucket in buckets.values():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ] == {"SSEAlgorithm": "AES256"}
        assert properties["LifecycleConfiguration"]["Rules"], "every bucket has a lifecycle"


def test_every_bucket_policy_denies_requests_without_tls(node):
    policies = node.resources("AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        assert any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )


def test_results_are_versioned_and_old_versions_expire_after_the_retention(node):
    results = node.json["Resources"][node.logical_id(node.stack.storage.results_bucket)]["Properties"]
    assert results["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = results["LifecycleConfiguration"]["Rules"]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    assert "ExpirationInDays" not in rule


def test_log_archive_expires_after_the_retention_days(node, variant):
    for synthesized, days in ((node, 90), (variant, 14)):
        bucket_id = synthesized.logical_id(synthesized.stack.storage.log_bucket)
        (rule,) = synthesized.json["Resources"][bucket_id]["Properties"]["LifecycleConfiguration"]["Rules"]
        assert rule["ExpirationInDays"] == days
        # S3 refuses a transition to IA at 30 days for objects that expire sooner.
        assert ("Transitions" in rule) == (days > 30)


def test_data_buckets_send_access_logs_to_the_access_log_bucket(node):
    storage = node.stack.storage
    access_logs = {"Ref": node.logical_id(storage.access_log_bucket)}
    for bucket in (storage.results_bucket, storage.log_bucket):
        logging = node.json["Resources"][node.logical_id(bucket)]["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == access_logs


def test_tables_have_point_in_time_recovery_and_encryption(node):
    tables = node.resources("AWS::DynamoDB::GlobalTable")
    # runs, workflows, processors, slots, idempotency, layers; trigger rules and trigger state; joins
    assert len(tables) == 9
    for table in tables.values():
        properties = table["Properties"]
        assert properties["SSESpecification"]["SSEEnabled"] is True
        (replica,) = properties["Replicas"]
        assert replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_runs_table_keys_and_listing_indexes(node):
    runs = node.json["Resources"][node.logical_id(node.stack.storage.runs_table)]["Properties"]
    assert runs["KeySchema"] == [
        {"AttributeName": "run_id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    indexes = {i["IndexName"]: i["KeySchema"] for i in runs["GlobalSecondaryIndexes"]}
    assert indexes == {
        "by-workflow": [
            {"AttributeName": "workflow_name", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        "by-status": [
            {"AttributeName": "status", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        "by-content-key": [
            {"AttributeName": "content_key", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
    }
    projections = {i["IndexName"]: i["Projection"] for i in runs["GlobalSecondaryIndexes"]}
    assert projections["by-content-key"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}


def test_single_key_tables_and_idempotency_ttl(node):
    storage = node.stack.storage
    expected = {
        storage.workflows_table: "name",
        storage.processors_table: "processor_key",
        storage.slots_table: "slot_id",
        storage.idempotency_table: "id",
        storage.layers_table: "name",
    }
    for table, key in expected.items():
        properties = node.json["Resources"][node.logical_id(table)]["Properties"]
        assert properties["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
    idempotency = node.json["Resources"][node.logical_id(storage.idempotency_table)]["Properties"]
    assert idempotency["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
