"""SQLAlchemy mapping of schema.sql (the schema file is the truth; this mirrors it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, ForeignKey, Index, Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    tool_version: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)
    started_at: Mapped[str] = mapped_column(Text)
    finished_at: Mapped[str] = mapped_column(Text)
    host_json: Mapped[str] = mapped_column(Text)
    cpu_model: Mapped[str] = mapped_column(Text)
    os: Mapped[str] = mapped_column(Text)
    torch_version: Mapped[str | None] = mapped_column(Text)

    devices: Mapped[list[DeviceRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="DeviceRow.seq"
    )
    measurements: Mapped[list[MeasurementRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="MeasurementRow.seq"
    )
    unavailable: Mapped[list[UnavailableRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="UnavailableRow.seq"
    )

    __table_args__ = (Index("runs_started_at", "started_at"),)


class DeviceRow(Base):
    __tablename__ = "devices"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    info_json: Mapped[str] = mapped_column(Text)

    run: Mapped[RunRow] = relationship(back_populates="devices")


class MeasurementRow(Base):
    __tablename__ = "measurements"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    probe: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(Text)
    variant: Mapped[str | None] = mapped_column(Text)
    dtype: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    value: Mapped[float] = mapped_column(Double)
    min_value: Mapped[float] = mapped_column(Double)
    max_value: Mapped[float] = mapped_column(Double)
    n: Mapped[int] = mapped_column(Integer)
    samples_json: Mapped[str] = mapped_column(Text)
    params_json: Mapped[str] = mapped_column(Text)
    peak: Mapped[float | None] = mapped_column(Double)
    peak_source: Mapped[str | None] = mapped_column(Text)
    energy_method: Mapped[str | None] = mapped_column(Text)
    energy_joules: Mapped[float | None] = mapped_column(Double)
    energy_watts_avg: Mapped[float | None] = mapped_column(Double)
    energy_watts_peak: Mapped[float | None] = mapped_column(Double)
    energy_seconds: Mapped[float | None] = mapped_column(Double)
    energy_idle_watts: Mapped[float | None] = mapped_column(Double)
    energy_unavailable_reason: Mapped[str | None] = mapped_column(Text)
    energy_telemetry_json: Mapped[str | None] = mapped_column(Text)

    run: Mapped[RunRow] = relationship(back_populates="measurements")

    __table_args__ = (Index("measurements_metric", "metric", "dtype"),)


class UnavailableRow(Base):
    __tablename__ = "unavailable"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    probe: Mapped[str] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(Text)
    metric: Mapped[str | None] = mapped_column(Text)
    dtype: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)

    run: Mapped[RunRow] = relationship(back_populates="unavailable")


# -- the results server ----------------------------------------------------------------------


class TokenRow(Base):
    __tablename__ = "tokens"

    token_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[str] = mapped_column(Text)
    client_hash: Mapped[str] = mapped_column(Text)


class SubmissionRow(Base):
    __tablename__ = "submissions"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(Text, ForeignKey("tokens.token_hash", ondelete="CASCADE"))
    received_at: Mapped[str] = mapped_column(Text)
    client_hash: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text)
    hidden: Mapped[int] = mapped_column(Integer)
    flagged_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("submissions_received_at", "received_at"),
        Index("submissions_token", "token_hash"),
    )


class FigureRow(Base):
    __tablename__ = "figures"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(Text)
    dtype: Mapped[str] = mapped_column(Text)
    variant: Mapped[str] = mapped_column(Text)
    device_model: Mapped[str] = mapped_column(Text)
    value: Mapped[float] = mapped_column(Double)
    efficiency: Mapped[float | None] = mapped_column(Double)
    counted: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("figures_board", "metric", "dtype", "variant", "device_model", "counted", "value", "efficiency"),
    )


class BoardGroupRow(Base):
    __tablename__ = "board_groups"

    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    dtype: Mapped[str] = mapped_column(Text, primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    device_model: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    computed_version: Mapped[int] = mapped_column(BigInteger)
    figure_count: Mapped[int] = mapped_column(Integer)
    p10: Mapped[float | None] = mapped_column(Double)
    median: Mapped[float | None] = mapped_column(Double)
    p90: Mapped[float | None] = mapped_column(Double)
    per_watt: Mapped[float | None] = mapped_column(Double)
    per_watt_count: Mapped[int] = mapped_column(Integer)
