/*
 * The schedule and queue-settings ops of the Java conformance driver (tests/conformance/README.md),
 * over the Java client's public API: client.schedules() with NewSchedule, and the settings calls
 * of client.admin(). Apart from Driver.java so that each file stays about one part of the API.
 */

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.protobuf.Duration;
import io.jobwire.client.JobwireClient;
import io.jobwire.client.NewJob;
import io.jobwire.client.NewSchedule;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import jobwire.v1.Jobwire.QueueSettings;
import jobwire.v1.Schedules.MissedFirePolicy;
import jobwire.v1.Schedules.OverlapPolicy;
import jobwire.v1.Schedules.Schedule;
import jobwire.v1.Schedules.ScheduleDefinition;
import jobwire.v1.Schedules.UpsertScheduleResponse;

final class ScheduleOps {
  /** The settings the ops name that are counts (durations are timeout, completed_retention, dead_retention, as `_ms`). */
  private static final List<String> COUNTS = List.of("max_waiting", "max_attempts", "concurrency", "completed_max", "dead_max", "key_concurrency");

  private final JobwireClient client;

  ScheduleOps(JobwireClient client) {
    this.client = client;
  }

  /** The op's reply, or null when {@code op} is none of these. */
  JsonObject serve(String op, JsonObject r) throws Driver.Refused {
    String queue = Driver.text(r, "queue");
    String name = Driver.text(r, "name");
    switch (op) {
      case "schedule_upsert":
        return upsert(r);
      case "schedule_get":
        return schedule(Driver.join(client.schedules().get(queue, name)));
      case "schedule_list":
        JsonArray names = new JsonArray();
        Driver.join(client.schedules().list(queue)).forEach(s -> names.add(s.getDefinition().getName()));
        JsonObject out = new JsonObject();
        out.add("names", names);
        return out;
      case "schedule_pause":
        Driver.join(client.schedules().pause(queue, name));
        return new JsonObject();
      case "schedule_resume":
        Driver.join(client.schedules().resume(queue, name));
        return new JsonObject();
      case "schedule_delete":
        Driver.join(client.schedules().delete(queue, name));
        return new JsonObject();
      case "schedule_trigger":
        JsonObject triggered = new JsonObject();
        triggered.addProperty("job_id", Driver.join(client.schedules().trigger(queue, name)));
        return triggered;
      case "settings_get":
        var read = Driver.join(client.admin().queueSettings(queue));
        return settings(read.getSettings(), read.getEffective());
      case "settings_set":
        return settingsSet(r);
      default:
        return null;
    }
  }

  private JsonObject upsert(JsonObject r) throws Driver.Refused {
    NewJob job = NewJob.of(Driver.text(r, "queue"), Driver.text(r, "type")).payload(Driver.json(r, "payload"));
    if (r.has("headers")) {
      for (Map.Entry<String, JsonElement> h : r.getAsJsonObject("headers").entrySet()) {
        job = job.header(h.getKey(), h.getValue().getAsString());
      }
    }
    if (r.has("max_attempts")) {
      job = job.maxAttempts((int) Driver.number(r, "max_attempts", 0));
    }
    String name = Driver.text(r, "name");
    NewSchedule s =
        r.has("cron")
            ? NewSchedule.cron(name, job, Driver.text(r, "cron"))
            : NewSchedule.every(name, job, java.time.Duration.ofMillis(Driver.number(r, "every_ms", 0)));
    if (r.has("time_zone")) {
      s = s.timeZone(Driver.text(r, "time_zone"));
    }
    if (r.has("jitter_ms")) {
      s = s.jitter(java.time.Duration.ofMillis(Driver.number(r, "jitter_ms", 0)));
    }
    if (r.has("missed_fires")) {
      MissedFirePolicy policy = MissedFirePolicy.valueOf("MISSED_FIRE_POLICY_" + Driver.text(r, "missed_fires"));
      s = s.missedFires(policy, (int) Driver.number(r, "catch_up_max", 0));
    }
    if (r.has("overlap")) {
      s = s.overlap(OverlapPolicy.valueOf("OVERLAP_POLICY_" + Driver.text(r, "overlap")));
    }
    UpsertScheduleResponse answer = Driver.join(client.schedules().upsert(s));
    JsonObject out = schedule(answer.getSchedule());
    out.addProperty("created", answer.getCreated());
    return out;
  }

  static JsonObject schedule(Schedule s) {
    ScheduleDefinition d = s.getDefinition();
    JsonObject out = new JsonObject();
    out.addProperty("name", d.getName());
    out.addProperty("type", d.getTemplate().getType());
    if (d.hasEvery()) {
      out.addProperty("every_ms", d.getEvery().getSeconds() * 1000 + d.getEvery().getNanos() / 1_000_000);
    } else {
      out.add("every_ms", JsonNull.INSTANCE);
    }
    if (d.hasCron()) {
      out.addProperty("cron", d.getCron());
    } else {
      out.add("cron", JsonNull.INSTANCE);
    }
    out.addProperty("time_zone", d.getTimeZone());
    out.addProperty("paused", s.getPaused());
    out.addProperty("has_next_fire", s.hasNextFireAt());
    out.addProperty("fires", s.getFires());
    out.addProperty("revision", s.getRevision());
    out.addProperty("last_job_id", s.getLastJobId());
    out.addProperty("overlap", d.getOverlap().name().replaceFirst("^OVERLAP_POLICY_", ""));
    out.addProperty("missed_fires", d.getMissedFires().name().replaceFirst("^MISSED_FIRE_POLICY_", ""));
    out.addProperty("catch_up_max", d.getCatchUpMax());
    return out;
  }

  private JsonObject settingsSet(JsonObject r) throws Driver.Refused {
    JsonObject given = r.has("settings") ? r.getAsJsonObject("settings") : new JsonObject();
    QueueSettings.Builder set = QueueSettings.newBuilder();
    for (String key : given.keySet()) {
      long v = given.get(key).getAsLong();
      Duration d = Duration.newBuilder().setSeconds(v / 1000).setNanos((int) (v % 1000) * 1_000_000).build();
      switch (key) {
        case "max_waiting" -> set.setMaxWaiting(v);
        case "max_attempts" -> set.setMaxAttempts((int) v);
        case "concurrency" -> set.setConcurrency((int) v);
        case "completed_max" -> set.setCompletedMax(v);
        case "dead_max" -> set.setDeadMax(v);
        case "key_concurrency" -> set.setKeyConcurrency((int) v);
        case "timeout_ms" -> set.setTimeout(d);
        case "completed_retention_ms" -> set.setCompletedRetention(d);
        case "dead_retention_ms" -> set.setDeadRetention(d);
        default -> throw new Driver.Refused("INVALID_ARGUMENT", "the driver knows no setting " + key);
      }
    }
    List<String> clear = new ArrayList<>();
    if (r.has("clear")) {
      r.getAsJsonArray("clear").forEach(e -> clear.add(e.getAsString()));
    }
    var now = Driver.join(client.admin().setQueueSettings(Driver.text(r, "queue"), set.build(), clear));
    return settings(now.getSettings(), now.getEffective());
  }

  private static JsonObject settings(QueueSettings held, QueueSettings effective) {
    JsonObject out = new JsonObject();
    out.add("settings", settingsOf(held));
    out.add("effective", settingsOf(effective));
    return out;
  }

  /** Every setting of the ops by its name, null where unset. */
  private static JsonObject settingsOf(QueueSettings s) {
    JsonObject out = new JsonObject();
    for (String name : COUNTS) {
      var field = QueueSettings.getDescriptor().findFieldByName(name);
      if (s.hasField(field)) {
        out.addProperty(name, ((Number) s.getField(field)).longValue());
      } else {
        out.add(name, JsonNull.INSTANCE);
      }
    }
    for (String name : List.of("timeout", "completed_retention", "dead_retention")) {
      var field = QueueSettings.getDescriptor().findFieldByName(name);
      if (s.hasField(field)) {
        Duration d = (Duration) s.getField(field);
        out.addProperty(name + "_ms", d.getSeconds() * 1000 + d.getNanos() / 1_000_000);
      } else {
        out.add(name + "_ms", JsonNull.INSTANCE);
      }
    }
    return out;
  }
}
