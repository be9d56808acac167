"""How the line talks to the device: PLC handshakes (OPC UA, Modbus TCP), MQTT, webhooks, and their outbox."""
