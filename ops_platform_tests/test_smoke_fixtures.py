def test_fixtures_start(databases, s3_bucket, slack_resource, slack_server):
    report = slack_resource.notifier().post("hello")
    assert report.ok and report.delivered == ["chat.postMessage", "webhook"]
    assert slack_server.texts() == ["hello", "hello"]
    assert s3_bucket.list_objects_v2(Bucket="ops-backups-test")["KeyCount"] == 0
