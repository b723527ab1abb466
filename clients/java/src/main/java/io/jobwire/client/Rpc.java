package io.jobwire.client;

import com.google.protobuf.Message;
import io.grpc.MethodDescriptor;
import io.grpc.MethodDescriptor.MethodType;
import io.grpc.protobuf.ProtoUtils;
import java.util.List;
import jobwire.v1.Jobwire.AddJobRequest;
import jobwire.v1.Jobwire.AddJobResponse;
import jobwire.v1.Jobwire.AddJobsRequest;
import jobwire.v1.Jobwire.AddJobsResponse;
import jobwire.v1.Jobwire.CancelJobRequest;
import jobwire.v1.Jobwire.CancelJobResponse;
import jobwire.v1.Jobwire.CancelJobsRequest;
import jobwire.v1.Jobwire.CancelJobsResponse;
import jobwire.v1.Jobwire.CompleteJobRequest;
import jobwire.v1.Jobwire.CompleteJobResponse;
import jobwire.v1.Jobwire.CreateSessionRequest;
import jobwire.v1.Jobwire.CreateSessionResponse;
import jobwire.v1.Jobwire.DeleteJobRequest;
import jobwire.v1.Jobwire.DeleteJobResponse;
import jobwire.v1.Jobwire.DeleteJobsRequest;
import jobwire.v1.Jobwire.DeleteJobsResponse;
import jobwire.v1.Jobwire.DeleteSessionRequest;
import jobwire.v1.Jobwire.DeleteSessionResponse;
import jobwire.v1.Jobwire.ExtendLeaseRequest;
import jobwire.v1.Jobwire.ExtendLeaseResponse;
import jobwire.v1.Jobwire.FailJobRequest;
import jobwire.v1.Jobwire.FailJobResponse;
import jobwire.v1.Jobwire.GetAccessRequest;
import jobwire.v1.Jobwire.GetAccessResponse;
import jobwire.v1.Jobwire.GetJobInfoRequest;
import jobwire.v1.Jobwire.GetJobInfoResponse;
import jobwire.v1.Jobwire.GetJobRequest;
import jobwire.v1.Jobwire.GetJobResponse;
import jobwire.v1.Jobwire.GetQueueActivityRequest;
import jobwire.v1.Jobwire.GetQueueActivityResponse;
import jobwire.v1.Jobwire.GetSessionRequest;
import jobwire.v1.Jobwire.GetSessionResponse;
import jobwire.v1.Jobwire.ListDeadJobGroupsRequest;
import jobwire.v1.Jobwire.ListDeadJobGroupsResponse;
import jobwire.v1.Jobwire.ListJobsRequest;
import jobwire.v1.Jobwire.ListJobsResponse;
import jobwire.v1.Jobwire.ListQueuesRequest;
import jobwire.v1.Jobwire.ListQueuesResponse;
import jobwire.v1.Jobwire.ListSessionsRequest;
import jobwire.v1.Jobwire.ListSessionsResponse;
import jobwire.v1.Jobwire.ListSessionJobsRequest;
import jobwire.v1.Jobwire.ListSessionJobsResponse;
import jobwire.v1.Jobwire.ListWorkersRequest;
import jobwire.v1.Jobwire.ListWorkersResponse;
import jobwire.v1.Jobwire.GetQueueSettingsRequest;
import jobwire.v1.Jobwire.GetQueueSettingsResponse;
import jobwire.v1.Jobwire.PauseQueueRequest;
import jobwire.v1.Jobwire.PauseQueueResponse;
import jobwire.v1.Jobwire.PurgeQueueRequest;
import jobwire.v1.Jobwire.PurgeQueueResponse;
import jobwire.v1.Jobwire.ReportProgressRequest;
import jobwire.v1.Jobwire.ReportProgressResponse;
import jobwire.v1.Jobwire.ResumeQueueRequest;
import jobwire.v1.Jobwire.ResumeQueueResponse;
import jobwire.v1.Jobwire.RetryDeadJobsRequest;
import jobwire.v1.Jobwire.RetryDeadJobsResponse;
import jobwire.v1.Jobwire.RetryJobRequest;
import jobwire.v1.Jobwire.RetryJobResponse;
import jobwire.v1.Jobwire.RetryJobsRequest;
import jobwire.v1.Jobwire.RetryJobsResponse;
import jobwire.v1.Jobwire.ReturnJobRequest;
import jobwire.v1.Jobwire.ReturnJobResponse;
import jobwire.v1.Jobwire.SetQueueSettingsRequest;
import jobwire.v1.Jobwire.SetQueueSettingsResponse;
import jobwire.v1.Jobwire.StatsRequest;
import jobwire.v1.Jobwire.StatsResponse;
import jobwire.v1.Jobwire.SubscribeQueuesRequest;
import jobwire.v1.Jobwire.SubscribeQueuesResponse;
import jobwire.v1.Jobwire.SubscribeRequest;
import jobwire.v1.Jobwire.SubscribeResponse;
import jobwire.v1.Jobwire.UpdateSessionRequest;
import jobwire.v1.Jobwire.UpdateSessionResponse;
import jobwire.v1.Jobwire.WatchJobRequest;
import jobwire.v1.Jobwire.WatchJobResponse;
import jobwire.v1.Jobwire.WorkRequest;
import jobwire.v1.Jobwire.WorkResponse;
import jobwire.v1.Schedules.DeleteScheduleRequest;
import jobwire.v1.Schedules.DeleteScheduleResponse;
import jobwire.v1.Schedules.GetScheduleRequest;
import jobwire.v1.Schedules.GetScheduleResponse;
import jobwire.v1.Schedules.ListSchedulesRequest;
import jobwire.v1.Schedules.ListSchedulesResponse;
import jobwire.v1.Schedules.PauseScheduleRequest;
import jobwire.v1.Schedules.PauseScheduleResponse;
import jobwire.v1.Schedules.ResumeScheduleRequest;
import jobwire.v1.Schedules.ResumeScheduleResponse;
import jobwire.v1.Schedules.TriggerScheduleRequest;
import jobwire.v1.Schedules.TriggerScheduleResponse;
import jobwire.v1.Schedules.UpsertScheduleRequest;
import jobwire.v1.Schedules.UpsertScheduleResponse;

/**
 * The gRPC method table of the jobwire.v1 contract: one descriptor per RPC, with the protobuf
 * marshallers of its generated request and response classes.
 *
 * <p>grpc-java usually generates this table with protoc-gen-grpc-java; that plugin's binaries are
 * not served by the registry this project builds from, so the table is written here instead and
 * {@code RpcTableTest} holds it to the generated service descriptors: every RPC of every service
 * of every proto file is here, with its kind (unary, server-streaming, bidirectional) and its request and response
 * types. A proto change that this table misses fails that test.
 */
final class Rpc {
  static final String QUEUE = "jobwire.v1.QueueService";
  static final String SESSIONS = "jobwire.v1.SessionService";
  static final String SCHEDULES = "jobwire.v1.ScheduleService";

  static final MethodDescriptor<AddJobRequest, AddJobResponse> ADD_JOB =
      unary(QUEUE, "AddJob", AddJobRequest.getDefaultInstance(), AddJobResponse.getDefaultInstance());

  static final MethodDescriptor<AddJobsRequest, AddJobsResponse> ADD_JOBS =
      unary(QUEUE, "AddJobs", AddJobsRequest.getDefaultInstance(), AddJobsResponse.getDefaultInstance());

  static final MethodDescriptor<GetJobRequest, GetJobResponse> GET_JOB =
      serverStreaming(QUEUE, "GetJob", GetJobRequest.getDefaultInstance(), GetJobResponse.getDefaultInstance());

  static final MethodDescriptor<WorkRequest, WorkResponse> WORK =
      bidi(QUEUE, "Work", WorkRequest.getDefaultInstance(), WorkResponse.getDefaultInstance());

  static final MethodDescriptor<CompleteJobRequest, CompleteJobResponse> COMPLETE_JOB =
      unary(QUEUE, "CompleteJob", CompleteJobRequest.getDefaultInstance(), CompleteJobResponse.getDefaultInstance());

  static final MethodDescriptor<FailJobRequest, FailJobResponse> FAIL_JOB =
      unary(QUEUE, "FailJob", FailJobRequest.getDefaultInstance(), FailJobResponse.getDefaultInstance());

  static final MethodDescriptor<ExtendLeaseRequest, ExtendLeaseResponse> EXTEND_LEASE =
      unary(QUEUE, "ExtendLease", ExtendLeaseRequest.getDefaultInstance(), ExtendLeaseResponse.getDefaultInstance());

  static final MethodDescriptor<ReturnJobRequest, ReturnJobResponse> RETURN_JOB =
      unary(QUEUE, "ReturnJob", ReturnJobRequest.getDefaultInstance(), ReturnJobResponse.getDefaultInstance());

  static final MethodDescriptor<GetJobInfoRequest, GetJobInfoResponse> GET_JOB_INFO =
      unary(QUEUE, "GetJobInfo", GetJobInfoRequest.getDefaultInstance(), GetJobInfoResponse.getDefaultInstance());

  static final MethodDescriptor<StatsRequest, StatsResponse> STATS =
      unary(QUEUE, "Stats", StatsRequest.getDefaultInstance(), StatsResponse.getDefaultInstance());

  static final MethodDescriptor<ListQueuesRequest, ListQueuesResponse> LIST_QUEUES =
      unary(QUEUE, "ListQueues", ListQueuesRequest.getDefaultInstance(), ListQueuesResponse.getDefaultInstance());

  static final MethodDescriptor<WatchJobRequest, WatchJobResponse> WATCH_JOB =
      serverStreaming(QUEUE, "WatchJob", WatchJobRequest.getDefaultInstance(), WatchJobResponse.getDefaultInstance());

  static final MethodDescriptor<ReportProgressRequest, ReportProgressResponse> REPORT_PROGRESS =
      unary(QUEUE, "ReportProgress", ReportProgressRequest.getDefaultInstance(), ReportProgressResponse.getDefaultInstance());

  static final MethodDescriptor<SubscribeRequest, SubscribeResponse> SUBSCRIBE =
      serverStreaming(QUEUE, "Subscribe", SubscribeRequest.getDefaultInstance(), SubscribeResponse.getDefaultInstance());

  static final MethodDescriptor<CancelJobRequest, CancelJobResponse> CANCEL_JOB =
      unary(QUEUE, "CancelJob", CancelJobRequest.getDefaultInstance(), CancelJobResponse.getDefaultInstance());

  static final MethodDescriptor<PauseQueueRequest, PauseQueueResponse> PAUSE_QUEUE =
      unary(QUEUE, "PauseQueue", PauseQueueRequest.getDefaultInstance(), PauseQueueResponse.getDefaultInstance());

  static final MethodDescriptor<ResumeQueueRequest, ResumeQueueResponse> RESUME_QUEUE =
      unary(QUEUE, "ResumeQueue", ResumeQueueRequest.getDefaultInstance(), ResumeQueueResponse.getDefaultInstance());

  static final MethodDescriptor<SetQueueSettingsRequest, SetQueueSettingsResponse> SET_QUEUE_SETTINGS =
      unary(
          QUEUE,
          "SetQueueSettings",
          SetQueueSettingsRequest.getDefaultInstance(),
          SetQueueSettingsResponse.getDefaultInstance());

  static final MethodDescriptor<GetQueueSettingsRequest, GetQueueSettingsResponse> GET_QUEUE_SETTINGS =
      unary(
          QUEUE,
          "GetQueueSettings",
          GetQueueSettingsRequest.getDefaultInstance(),
          GetQueueSettingsResponse.getDefaultInstance());

  static final MethodDescriptor<ListJobsRequest, ListJobsResponse> LIST_JOBS =
      unary(QUEUE, "ListJobs", ListJobsRequest.getDefaultInstance(), ListJobsResponse.getDefaultInstance());

  static final MethodDescriptor<RetryJobRequest, RetryJobResponse> RETRY_JOB =
      unary(QUEUE, "RetryJob", RetryJobRequest.getDefaultInstance(), RetryJobResponse.getDefaultInstance());

  static final MethodDescriptor<RetryDeadJobsRequest, RetryDeadJobsResponse> RETRY_DEAD_JOBS =
      unary(QUEUE, "RetryDeadJobs", RetryDeadJobsRequest.getDefaultInstance(), RetryDeadJobsResponse.getDefaultInstance());

  static final MethodDescriptor<DeleteJobRequest, DeleteJobResponse> DELETE_JOB =
      unary(QUEUE, "DeleteJob", DeleteJobRequest.getDefaultInstance(), DeleteJobResponse.getDefaultInstance());

  static final MethodDescriptor<PurgeQueueRequest, PurgeQueueResponse> PURGE_QUEUE =
      unary(QUEUE, "PurgeQueue", PurgeQueueRequest.getDefaultInstance(), PurgeQueueResponse.getDefaultInstance());

  static final MethodDescriptor<ListWorkersRequest, ListWorkersResponse> LIST_WORKERS =
      unary(QUEUE, "ListWorkers", ListWorkersRequest.getDefaultInstance(), ListWorkersResponse.getDefaultInstance());

  static final MethodDescriptor<RetryJobsRequest, RetryJobsResponse> RETRY_JOBS =
      unary(QUEUE, "RetryJobs", RetryJobsRequest.getDefaultInstance(), RetryJobsResponse.getDefaultInstance());

  static final MethodDescriptor<CancelJobsRequest, CancelJobsResponse> CANCEL_JOBS =
      unary(QUEUE, "CancelJobs", CancelJobsRequest.getDefaultInstance(), CancelJobsResponse.getDefaultInstance());

  static final MethodDescriptor<DeleteJobsRequest, DeleteJobsResponse> DELETE_JOBS =
      unary(QUEUE, "DeleteJobs", DeleteJobsRequest.getDefaultInstance(), DeleteJobsResponse.getDefaultInstance());

  static final MethodDescriptor<ListDeadJobGroupsRequest, ListDeadJobGroupsResponse> LIST_DEAD_JOB_GROUPS =
      unary(QUEUE, "ListDeadJobGroups", ListDeadJobGroupsRequest.getDefaultInstance(), ListDeadJobGroupsResponse.getDefaultInstance());

  static final MethodDescriptor<GetQueueActivityRequest, GetQueueActivityResponse> GET_QUEUE_ACTIVITY =
      unary(QUEUE, "GetQueueActivity", GetQueueActivityRequest.getDefaultInstance(), GetQueueActivityResponse.getDefaultInstance());

  static final MethodDescriptor<SubscribeQueuesRequest, SubscribeQueuesResponse> SUBSCRIBE_QUEUES =
      serverStreaming(QUEUE, "SubscribeQueues", SubscribeQueuesRequest.getDefaultInstance(), SubscribeQueuesResponse.getDefaultInstance());

  static final MethodDescriptor<GetAccessRequest, GetAccessResponse> GET_ACCESS =
      unary(QUEUE, "GetAccess", GetAccessRequest.getDefaultInstance(), GetAccessResponse.getDefaultInstance());

  static final MethodDescriptor<CreateSessionRequest, CreateSessionResponse> CREATE_SESSION =
      unary(SESSIONS, "CreateSession", CreateSessionRequest.getDefaultInstance(), CreateSessionResponse.getDefaultInstance());

  static final MethodDescriptor<GetSessionRequest, GetSessionResponse> GET_SESSION =
      unary(SESSIONS, "GetSession", GetSessionRequest.getDefaultInstance(), GetSessionResponse.getDefaultInstance());

  static final MethodDescriptor<UpdateSessionRequest, UpdateSessionResponse> UPDATE_SESSION =
      unary(SESSIONS, "UpdateSession", UpdateSessionRequest.getDefaultInstance(), UpdateSessionResponse.getDefaultInstance());

  static final MethodDescriptor<DeleteSessionRequest, DeleteSessionResponse> DELETE_SESSION =
      unary(SESSIONS, "DeleteSession", DeleteSessionRequest.getDefaultInstance(), DeleteSessionResponse.getDefaultInstance());

  static final MethodDescriptor<ListSessionsRequest, ListSessionsResponse> LIST_SESSIONS =
      unary(SESSIONS, "ListSessions", ListSessionsRequest.getDefaultInstance(), ListSessionsResponse.getDefaultInstance());

  static final MethodDescriptor<ListSessionJobsRequest, ListSessionJobsResponse> LIST_SESSION_JOBS =
      unary(SESSIONS, "ListSessionJobs", ListSessionJobsRequest.getDefaultInstance(), ListSessionJobsResponse.getDefaultInstance());

  static final MethodDescriptor<UpsertScheduleRequest, UpsertScheduleResponse> UPSERT_SCHEDULE =
      unary(SCHEDULES, "UpsertSchedule", UpsertScheduleRequest.getDefaultInstance(), UpsertScheduleResponse.getDefaultInstance());

  static final MethodDescriptor<GetScheduleRequest, GetScheduleResponse> GET_SCHEDULE =
      unary(SCHEDULES, "GetSchedule", GetScheduleRequest.getDefaultInstance(), GetScheduleResponse.getDefaultInstance());

  static final MethodDescriptor<ListSchedulesRequest, ListSchedulesResponse> LIST_SCHEDULES =
      unary(SCHEDULES, "ListSchedules", ListSchedulesRequest.getDefaultInstance(), ListSchedulesResponse.getDefaultInstance());

  static final MethodDescriptor<DeleteScheduleRequest, DeleteScheduleResponse> DELETE_SCHEDULE =
      unary(SCHEDULES, "DeleteSchedule", DeleteScheduleRequest.getDefaultInstance(), DeleteScheduleResponse.getDefaultInstance());

  static final MethodDescriptor<PauseScheduleRequest, PauseScheduleResponse> PAUSE_SCHEDULE =
      unary(SCHEDULES, "PauseSchedule", PauseScheduleRequest.getDefaultInstance(), PauseScheduleResponse.getDefaultInstance());

  static final MethodDescriptor<ResumeScheduleRequest, ResumeScheduleResponse> RESUME_SCHEDULE =
      unary(SCHEDULES, "ResumeSchedule", ResumeScheduleRequest.getDefaultInstance(), ResumeScheduleResponse.getDefaultInstance());

  static final MethodDescriptor<TriggerScheduleRequest, TriggerScheduleResponse> TRIGGER_SCHEDULE =
      unary(SCHEDULES, "TriggerSchedule", TriggerScheduleRequest.getDefaultInstance(), TriggerScheduleResponse.getDefaultInstance());

  /** Every RPC above, for the test that checks the table against the contract. */
  static final List<MethodDescriptor<?, ?>> ALL =
      List.of(
          ADD_JOB,
          ADD_JOBS,
          GET_JOB,
          WORK,
          COMPLETE_JOB,
          FAIL_JOB,
          EXTEND_LEASE,
          RETURN_JOB,
          GET_JOB_INFO,
          STATS,
          LIST_QUEUES,
          WATCH_JOB,
          REPORT_PROGRESS,
          SUBSCRIBE,
          CANCEL_JOB,
          PAUSE_QUEUE,
          RESUME_QUEUE,
          SET_QUEUE_SETTINGS,
          GET_QUEUE_SETTINGS,
          LIST_JOBS,
          RETRY_JOB,
          RETRY_DEAD_JOBS,
          DELETE_JOB,
          PURGE_QUEUE,
          LIST_WORKERS,
          RETRY_JOBS,
          CANCEL_JOBS,
          DELETE_JOBS,
          LIST_DEAD_JOB_GROUPS,
          GET_QUEUE_ACTIVITY,
          SUBSCRIBE_QUEUES,
          GET_ACCESS,
          CREATE_SESSION,
          GET_SESSION,
          UPDATE_SESSION,
          DELETE_SESSION,
          LIST_SESSIONS,
          LIST_SESSION_JOBS,
          UPSERT_SCHEDULE,
          GET_SCHEDULE,
          LIST_SCHEDULES,
          DELETE_SCHEDULE,
          PAUSE_SCHEDULE,
          RESUME_SCHEDULE,
          TRIGGER_SCHEDULE);

  private Rpc() {}

  private static <Q extends Message, R extends Message> MethodDescriptor<Q, R> unary(
      String service, String method, Q request, R response) {
    return descriptor(MethodType.UNARY, service, method, request, response);
  }

  private static <Q extends Message, R extends Message> MethodDescriptor<Q, R> serverStreaming(
      String service, String method, Q request, R response) {
    return descriptor(MethodType.SERVER_STREAMING, service, method, request, response);
  }

  private static <Q extends Message, R extends Message> MethodDescriptor<Q, R> bidi(
      String service, String method, Q request, R response) {
    return descriptor(MethodType.BIDI_STREAMING, service, method, request, response);
  }

  private static <Q extends Message, R extends Message> MethodDescriptor<Q, R> descriptor(
      MethodType type, String service, String method, Q request, R response) {
    return MethodDescriptor.<Q, R>newBuilder()
        .setType(type)
        .setFullMethodName(MethodDescriptor.generateFullMethodName(service, method))
        .setRequestMarshaller(ProtoUtils.marshaller(request))
        .setResponseMarshaller(ProtoUtils.marshaller(response))
        .build();
  }
}
