import com.rabbitmq.client.*;
import java.util.*;

public class Smoke {
    public static void main(String[] args) throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setHost("127.0.0.1");
        f.setPort(Integer.parseInt(args[0]));
        try (Connection c = f.newConnection()) {
            System.out.println("server " + c.getServerProperties().get("product") + " " + c.getServerProperties().get("version"));
            Channel ch = c.createChannel();
            String q = ch.queueDeclare("", false, true, true, Map.of("x-max-priority", 5)).getQueue();
            ch.confirmSelect();
            for (int i = 0; i < 3; i++) {
                ch.basicPublish("", q, new AMQP.BasicProperties.Builder().priority(i).headers(Map.of("n", i, "s", "x")).build(), ("m" + i).getBytes());
            }
            ch.waitForConfirmsOrDie(5000);
            GetResponse r = ch.basicGet(q, false);
            System.out.println("get " + new String(r.getBody()) + " left " + r.getMessageCount() + " prio " + r.getProps().getPriority() + " headers " + r.getProps().getHeaders());
            ch.basicNack(r.getEnvelope().getDeliveryTag(), false, true);
            List<String> got = new ArrayList<>();
            ch.basicQos(10);
            ch.basicConsume(q, false, (tag, d) -> { got.add(new String(d.getBody()) + (d.getEnvelope().isRedeliver() ? "*" : "")); ch.basicAck(d.getEnvelope().getDeliveryTag(), false); }, tag -> {});
            long end = System.currentTimeMillis() + 3000;
            while (got.size() < 3 && System.currentTimeMillis() < end) Thread.sleep(10);
            System.out.println("consumed " + got);
            try { ch.queueDeclarePassive("missing-" + q); } catch (java.io.IOException e) { System.out.println("passive: " + e.getCause().getMessage()); }
        }
    }
}
