"""The QoS profiles of the LAM graph, named once so every node and test agrees on them."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Commands: reliable, latest only (a backlog of stale setpoints is worse than none).
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# E-stop: reliable and deep enough that a burst of messages never drops the True.
ESTOP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Outputs (joint states, applied commands, diagnostics): reliable and volatile, readable by
# default-QoS and sensor-data subscribers alike.
STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Recording subscribers: deep, so a slow consumer loses nothing in a burst.
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Sensor streams we read from drivers: best effort accepts reliable and best-effort publishers.
SENSOR_QOS = qos_profile_sensor_data
# Operator keypoints: sensor data (best effort, shallow): the newest frame matters, not every one.
KEYPOINTS_QOS = qos_profile_sensor_data
# Task state others must not miss, even when they join late (task success, the current episode):
# reliable and transient-local, so a new subscriber gets the latest value at once.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
