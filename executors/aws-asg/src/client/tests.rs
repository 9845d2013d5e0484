use super::*;
use autoscaler_executor::ErrorKind;

#[test]
fn codes_map_to_kinds() {
    assert_eq!(
        classify(Some("Throttling"), 400, "Rate exceeded"),
        ErrorKind::Throttled
    );
    assert_eq!(
        classify(Some("AccessDenied"), 403, "User is not authorized"),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        classify(Some("UnauthorizedOperation"), 403, "x"),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        classify(Some("InvalidClientTokenId"), 403, "bad token"),
        ErrorKind::Credentials
    );
    assert_eq!(
        classify(Some("AuthFailure"), 401, "x"),
        ErrorKind::Credentials
    );
    assert_eq!(
        classify(
            Some("ValidationError"),
            400,
            "AutoScalingGroup name not found - x"
        ),
        ErrorKind::NotFound
    );
    assert_eq!(
        classify(Some("InvalidInstanceID.NotFound"), 400, "x"),
        ErrorKind::NotFound
    );
    assert_eq!(
        classify(
            Some("ValidationError"),
            400,
            "New SetDesiredCapacity value 9 is above max value 4"
        ),
        ErrorKind::Backend
    );
    assert_eq!(
        classify(Some("InternalFailure"), 500, "x"),
        ErrorKind::Unavailable
    );
    assert_eq!(classify(None, 503, "x"), ErrorKind::Unavailable);
    assert_eq!(classify(None, 429, "x"), ErrorKind::Throttled);
    assert!(ApiError::service(
        "ValidationError",
        "No active Lifecycle Action found with instance ID i-1",
        400
    )
    .is_no_active_lifecycle_action());
}

#[test]
fn capacity_states() {
    let i = |s: &str| GroupInstance {
        instance_id: "i-1".into(),
        lifecycle_state: s.into(),
        health_status: "Healthy".into(),
        protected_from_scale_in: false,
    };
    assert!(i("Pending").counts_as_capacity());
    assert!(i("Pending:Wait").counts_as_capacity());
    assert!(i("InService").counts_as_capacity());
    assert!(!i("Terminating:Wait").counts_as_capacity());
    assert!(!i("Standby").counts_as_capacity());
    assert!(i("Terminating:Wait").is_waiting_to_terminate());
    assert!(!i("Terminating:Proceed").is_waiting_to_terminate());
    // Going back to the warm pool on the termination hook: drained like a termination, and
    // never capacity; nor is any other warm-pool state.
    assert!(i("Warmed:Pending:Wait").is_waiting_to_terminate());
    for s in [
        "Warmed:Pending",
        "Warmed:Pending:Wait",
        "Warmed:Pending:Proceed",
        "Warmed:Stopped",
        "Warmed:Hibernated",
        "Warmed:Running",
        "Warmed:Terminating",
    ] {
        assert!(!i(s).counts_as_capacity(), "{s}");
    }
    assert!(!i("Warmed:Stopped").is_waiting_to_terminate());
}
